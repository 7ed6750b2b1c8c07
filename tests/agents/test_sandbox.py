"""The sandbox's bwrap command line, its probe, and the state dirs each agent CLI asks for."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks_lib.agents.aider import Aider
from tasks_lib.agents.base import SessionRequest
from tasks_lib.agents.claude import ClaudeCode
from tasks_lib.agents.codex import Codex
from tasks_lib.agents.opencode import OpenCodeRun
from tasks_lib.agents.sandbox import Sandbox, sandbox_problem, sandbox_refusal
from tasks_lib.agents.settings import AgentSettings


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of the test's own, so the user's real secrets dirs do not enter the argv."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def mounts(argv: list[str]) -> list[tuple[str, ...]]:
    """The mount options of a bwrap argv, each with its operands, in order."""
    arity = {"--ro-bind": 2, "--bind": 2, "--dev-bind": 2, "--dev": 1, "--proc": 1}
    arity |= {"--tmpfs": 1, "--remount-ro": 1}
    found, i = [], 1
    while argv[i] != "--":
        n = arity.get(argv[i])
        if n is None:
            i += 1 + (argv[i] == "--chdir")
            continue
        found.append(tuple(argv[i : i + n + 1]))
        i += n + 1
    return found


def test_wrap_makes_the_machine_read_only_but_the_writable_paths(tmp_path: Path) -> None:
    wt, git_dir, tmp = tmp_path / "wt", tmp_path / "git" / "wt", tmp_path / "tmp"
    sandbox = Sandbox(writable=(wt, git_dir), tmp=tmp)

    argv = sandbox.wrap(["agent", "--flag", "a b"], wt)

    assert Path(argv[0]).name == "bwrap"
    assert mounts(argv)[:3] == [("--ro-bind", "/", "/"), ("--dev", "/dev"), ("--proc", "/proc")]
    binds = {m[1] for m in mounts(argv) if m[0] == "--bind"}
    assert binds == {str(wt), str(git_dir), str(tmp)}
    assert all(m[1] == m[2] for m in mounts(argv) if m[0] == "--bind")
    assert wt.is_dir() and git_dir.is_dir() and tmp.is_dir()  # created to be bound
    for flag in ("--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert "--unshare-net" not in argv and "--unshare-all" not in argv  # the model is on 127.0.0.1
    assert argv[argv.index("--chdir") + 1] == str(wt)
    assert argv[argv.index("--") :] == ["--", "agent", "--flag", "a b"]
    assert not any(m[-1] == "/tmp" for m in mounts(argv)[1:])  # /tmp stays the real one


def test_extra_writable_paths_are_bound_and_created(tmp_path: Path) -> None:
    state = tmp_path / "home" / ".config" / "opencode"
    sandbox = Sandbox(writable=(tmp_path / "wt",), tmp=tmp_path / "tmp")

    argv = sandbox.wrap(["agent"], tmp_path / "wt", extra_writable=[state])

    assert ("--bind", str(state), str(state)) in mounts(argv)
    assert state.is_dir()


def test_hidden_paths_become_read_only_empty_and_missing_ones_are_skipped(
    tmp_path: Path, home: Path
) -> None:
    origin = tmp_path / "origin.git"
    origin.mkdir()
    (home / ".ssh").mkdir()
    (home / ".git-credentials").write_text("https://user:token@example.invalid\n")
    sandbox = Sandbox(
        writable=(tmp_path / "wt",), tmp=tmp_path / "tmp", hidden=(origin, tmp_path / "absent")
    )

    found = mounts(sandbox.wrap(["agent"], tmp_path / "wt"))

    for path in (origin, home / ".ssh"):
        assert ("--tmpfs", str(path)) in found and ("--remount-ro", str(path)) in found
        assert found.index(("--remount-ro", str(path))) > found.index(("--tmpfs", str(path)))
    assert ("--dev-bind", "/dev/null", str(home / ".git-credentials")) in found
    assert not any(str(tmp_path / "absent") in m for m in found)
    assert not any(str(home / ".gnupg") in m for m in found)  # absent: nothing to hide


def test_a_mount_inside_another_comes_after_it(tmp_path: Path) -> None:
    outer = tmp_path / "hidden"
    outer.mkdir()
    inner_writable = outer / "wt"
    wt = tmp_path / "wt"
    inner_hidden = wt / "secret"
    inner_hidden.mkdir(parents=True)
    sandbox = Sandbox(
        writable=(inner_writable, wt), tmp=tmp_path / "tmp", hidden=(outer, inner_hidden)
    )

    found = mounts(sandbox.wrap(["agent"], wt))

    assert found.index(("--bind", str(inner_writable), str(inner_writable))) > found.index(
        ("--tmpfs", str(outer))
    )
    assert found.index(("--tmpfs", str(inner_hidden))) > found.index(("--bind", str(wt), str(wt)))
    # Remounted read-only only after the mounts inside it exist.
    assert found.index(("--remount-ro", str(outer))) > found.index(
        ("--bind", str(inner_writable), str(inner_writable))
    )


def test_a_readonly_path_inside_a_writable_one_is_bound_read_only_after_it(
    tmp_path: Path,
) -> None:
    clone = tmp_path / "integration"
    (clone / ".git").mkdir(parents=True)
    sandbox = Sandbox(writable=(clone,), tmp=tmp_path / "tmp", readonly=(clone / ".git",))

    found = mounts(sandbox.wrap(["make", "test"], clone))

    writable = found.index(("--bind", str(clone), str(clone)))
    protected = found.index(("--ro-bind", str(clone / ".git"), str(clone / ".git")))
    assert writable < protected


def test_a_real_sandbox_keeps_the_clones_git_dir_read_only(tmp_path: Path) -> None:
    if sandbox_problem() is not None and not os.environ.get("CI"):  # CI installs it
        pytest.skip(f"needs bubblewrap: {sandbox_problem()}")
    clone = tmp_path / "integration"
    (clone / ".git").mkdir(parents=True)
    sandbox = Sandbox(writable=(clone,), tmp=tmp_path / "tmp", readonly=(clone / ".git",))
    script = "touch built.txt && (touch .git/config 2>/dev/null && echo WROTE || echo REFUSED)"
    done = subprocess.run(
        sandbox.wrap(["sh", "-c", script], clone), capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "REFUSED", done.stderr
    assert (clone / "built.txt").exists() and not (clone / ".git" / "config").exists()


def test_env_points_temp_files_at_the_private_temp_dir(tmp_path: Path) -> None:
    assert Sandbox(writable=(), tmp=tmp_path / "t").env() == {"TMPDIR": str(tmp_path / "t")}


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    sandbox_problem.cache_clear()
    yield
    sandbox_problem.cache_clear()


@pytest.mark.usefixtures("fresh_probe")
def test_problem_names_the_package_when_bwrap_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    problem = sandbox_problem()

    assert problem is not None and len(problem.splitlines()) == 1
    assert "`bubblewrap`" in problem and 'sandbox = "none"' in problem


@pytest.mark.usefixtures("fresh_probe")
def test_problem_quotes_bwrap_when_it_does_not_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))

    problem = sandbox_problem()

    assert problem is not None and "No permissions to creating new namespace" in problem
    assert str(fake) in problem and 'sandbox = "none"' in problem


def test_refusal_is_bwraps_own_message_only() -> None:
    missing = "bwrap: execvp agent: No such file or directory"
    assert sandbox_refusal(1, [missing]) == missing
    assert sandbox_refusal(1, ["agent failed", missing]) is None  # the agent's own output
    assert sandbox_refusal(0, [missing]) is None
    assert sandbox_refusal(None, [missing]) is None  # killed: a timeout, not a refusal


def test_each_cli_asks_for_its_state_dirs_not_home(home: Path) -> None:
    settings = AgentSettings(preset="opencode")
    xdg = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "cfg")}

    assert OpenCodeRun(settings).state_dirs(xdg) == [
        home / "cfg" / "opencode",
        home / ".local" / "share" / "opencode",
        home / ".cache" / "opencode",
        home / ".local" / "state" / "opencode",
    ]
    assert ClaudeCode(settings).state_dirs({"HOME": str(home)}) == [home / ".claude"]
    assert ClaudeCode(settings).state_dirs({"CLAUDE_CONFIG_DIR": "/c"}) == [Path("/c")]
    assert Codex(settings).state_dirs({"HOME": str(home)}) == [home / ".codex"]
    assert Codex(settings).state_dirs({"CODEX_HOME": "/x"}) == [Path("/x")]
    assert Aider(settings).state_dirs({"HOME": str(home)}) == [home / ".aider"]


def test_isolated_cli_state_stays_out_of_home_itself(tmp_path: Path) -> None:
    """With our provider, Claude Code's .claude.json and Codex's config go into their state
    dirs (writable in a sandbox), not into HOME (read-only there)."""
    settings = AgentSettings(preset="codex", model="m", base_url="http://127.0.0.1:1/v1")
    for preset in (ClaudeCode(settings), Codex(settings)):
        home = tmp_path / preset.name
        home.mkdir()
        env = preset.env(SessionRequest(task_id="a", worktree=tmp_path, prompt="p"), home)
        (state,) = preset.state_dirs(env)
        assert state.parent == home
        assert Path(env.get("CLAUDE_CONFIG_DIR") or env["CODEX_HOME"]) == state
    assert (tmp_path / "codex" / ".codex" / "config.toml").is_file()
