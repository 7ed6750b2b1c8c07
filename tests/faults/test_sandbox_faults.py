"""Fault cases of the agent sandbox (bubblewrap): an agent writing outside its checkout, pushing
to the origin, leaving daemons behind, outliving a SIGKILLed tgflow, missing inside the sandbox;
the real agent CLIs at work inside it; validation commands inside it. Real bwrap, real git, real
processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from helpers.agent_helpers import (
    IDENTITY_ENV,
    require_cli,
    settings_for,
    shell_step,
    write_and_commit,
)
from helpers.fakemodel import FakeModel
from helpers.gitrepos import git, log, make_origin
from helpers.workspaces import open_ws

from tasks_lib.agents.base import Outcome, SessionRequest
from tasks_lib.agents.command import CommandAgent
from tasks_lib.agents.opencode_server import OpenCodeServerAgent
from tasks_lib.agents.registry import make_agent
from tasks_lib.agents.sandbox import Sandbox, sandbox_problem
from tasks_lib.git.links import AHEAD_DIR
from tasks_lib.run.isolation import sandbox_for as isolation
from tasks_lib.run.validation import run_validation

pytest_plugins = ["helpers.agent_fixtures"]
ROOT = Path(__file__).resolve().parents[2]
MISSING = "tgflow-no-such-agent-program"


@pytest.fixture(autouse=True)
def _bwrap() -> None:
    problem = sandbox_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem} (CI must install bubblewrap: make tools)")
    pytest.skip(problem)


def checkout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The origin, and a task checkout of it whose ``.git`` is a file pointing to its git dir
    elsewhere (tgflow's per-task clone): ``(origin, checkout, git_dir)``."""
    origin = make_origin(tmp_path, {"README.md": "demo\n"})
    wt, git_dir = tmp_path / "work" / "a", tmp_path / "git" / "a"
    git_dir.parent.mkdir()
    git(tmp_path, "clone", "-q", "--separate-git-dir", str(git_dir), str(origin), str(wt))
    return origin, wt, git_dir


def sandbox_for(tmp_path: Path, wt: Path, git_dir: Path, hidden: tuple[Path, ...] = ()) -> Sandbox:
    return Sandbox(writable=(wt, git_dir), tmp=tmp_path / "session-tmp", hidden=hidden)


def request(wt: Path, sandbox: Sandbox, **kw: object) -> SessionRequest:
    fields: dict = {"timeout_s": 60.0, "idle_timeout_s": 60.0, **kw}
    return SessionRequest(
        task_id="a", worktree=wt, prompt="Task: a", env=dict(IDENTITY_ENV), sandbox=sandbox,
        **fields,
    )  # fmt: skip


def bash_agent(script: str) -> CommandAgent:
    return CommandAgent(["bash", "-c", textwrap.dedent(script)])


def marked(marker: str, named: bool = False) -> list[int]:
    """Live processes whose command line holds ``marker`` (with ``named``, as the program's
    name: the agent's own processes, not the bwrap that runs them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        hit = cmdline.split(b"\0")[0] == marker.encode() if named else marker.encode() in cmdline
        if hit and state != "Z":
            found.append(int(entry.name))
    return found


def none_left(marker: str, within_s: float = 5.0) -> list[int]:
    """Wait for every ``marker`` process to end; kill and return those that did not."""
    deadline = time.monotonic() + within_s
    while marked(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = marked(marker)
    for pid in left:  # never leave one behind when the test fails
        os.kill(pid, signal.SIGKILL)
    return left


def daemon(marker: str) -> str:
    """A shell line that double-forks a ``setsid`` daemon carrying ``marker``: out of the
    session's process group, re-parented away from the agent."""
    return f"(setsid bash -c 'exec -a {marker} sleep 300' </dev/null >/dev/null 2>&1 &)"


def test_agent_writes_only_its_checkout_git_dir_and_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tgflow runs the agent with the machine read-only: it writes its checkout, the
    checkout's git dir and its temp dir, never a file beside the checkout, HOME's
    ``.gitconfig`` (where ``url.insteadOf`` could redirect tgflow's pushes) or the secrets in
    HOME, and cannot reach a local origin (hidden), so its push fails."""
    origin, wt, git_dir = checkout(tmp_path)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / ".gitconfig").write_text("[user]\n\tname = Person\n")
    monkeypatch.setenv("HOME", str(home))
    before = log(origin)
    agent = bash_agent(f"""
        echo work > mine.txt
        git add mine.txt && git commit -q -m 'agent work' && echo COMMITTED
        echo tmp > "$TMPDIR/scratch" && echo TMP-WRITTEN
        echo x > ../beside.txt || echo BESIDE-DENIED
        git config --global url.{tmp_path}/evil.insteadOf {origin} || echo GITCONFIG-DENIED
        cat ~/.ssh/id_ed25519 || echo SSH-HIDDEN
        git push origin HEAD:main || echo PUSH-FAILED
        echo x > {origin}/HEAD || echo ORIGIN-DENIED
    """)

    result = agent.run(request(wt, sandbox_for(tmp_path, wt, git_dir, hidden=(origin,))))

    assert result.outcome is Outcome.SUCCEEDED, result.reason
    said = set(result.log)
    expected = {"COMMITTED", "TMP-WRITTEN", "BESIDE-DENIED", "GITCONFIG-DENIED", "SSH-HIDDEN"}
    assert expected | {"PUSH-FAILED", "ORIGIN-DENIED"} <= said, result.log
    assert "PRIVATE KEY" not in said
    assert (wt / "mine.txt").read_text() == "work\n"
    assert git(wt, "log", "-1", "--format=%s") == "agent work"
    assert (tmp_path / "session-tmp" / "scratch").read_text() == "tmp\n"
    assert not (tmp_path / "work" / "beside.txt").exists()
    assert (home / ".gitconfig").read_text() == "[user]\n\tname = Person\n"
    assert log(origin) == before  # the push never reached it
    assert (origin / "HEAD").read_text().startswith("ref: ")


def test_prompt_file_is_readable_inside_the_sandbox(tmp_path: Path) -> None:
    """tgflow writes the ``{prompt_file}`` into the session's sandbox temp dir, so an agent
    reading its prompt from the file gets it; the file is gone after the session."""
    _, wt, git_dir = checkout(tmp_path)
    agent = CommandAgent(["bash", "-c", 'cp "$1" got.md', "agent", "{prompt_file}"])

    result = agent.run(request(wt, sandbox_for(tmp_path, wt, git_dir)))

    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert (wt / "got.md").read_text() == "Task: a"
    assert list((tmp_path / "session-tmp").iterdir()) == []


def test_setsid_daemon_of_the_agent_is_gone_when_the_session_returns(tmp_path: Path) -> None:
    """tgflow runs the agent in a PID namespace of its own: a daemon it double-forked with
    ``setsid`` ends with the session, though it left the agent's process group."""
    _, wt, git_dir = checkout(tmp_path)
    marker = f"tgflow-daemon-{uuid.uuid4().hex}"

    result = bash_agent(daemon(marker)).run(request(wt, sandbox_for(tmp_path, wt, git_dir)))
    left = none_left(marker, within_s=2.0)

    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert left == []


def test_timed_out_agent_and_its_daemons_are_ended(tmp_path: Path) -> None:
    """tgflow ends a sandboxed agent that runs past its timeout, and with it every process it
    started, double-forked daemons included."""
    _, wt, git_dir = checkout(tmp_path)
    marker = f"tgflow-timeout-{uuid.uuid4().hex}"
    agent = bash_agent(f"{daemon(marker)}\nexec -a {marker} sleep 300")

    started = time.monotonic()
    result = agent.run(request(wt, sandbox_for(tmp_path, wt, git_dir), timeout_s=2.0))
    took = time.monotonic() - started
    left = none_left(marker)

    assert result.outcome is Outcome.TIMED_OUT, result.reason
    assert took < 15
    assert left == []


def test_agent_and_its_daemons_die_with_a_sigkilled_tgflow(tmp_path: Path) -> None:
    """tgflow's sandboxed agent dies with the process running the session, even when that is
    killed with SIGKILL (no clean-up of ours runs): the agent, its children and its setsid
    daemons all end."""
    _, wt, git_dir = checkout(tmp_path)
    marker = f"tgflow-orphan-{uuid.uuid4().hex}"
    # Spelled backwards in the parent's own command line, so only the agent's processes have it.
    script = textwrap.dedent(f"""
        from pathlib import Path
        from tasks_lib.agents.base import SessionRequest
        from tasks_lib.agents.command import CommandAgent
        from tasks_lib.agents.sandbox import Sandbox
        marker = {marker[::-1]!r}[::-1]
        line = f"(setsid bash -c 'exec -a {{marker}} sleep 300' </dev/null >/dev/null 2>&1 &)"
        agent = CommandAgent(["bash", "-c", f"{{line}}\\nexec -a {{marker}} sleep 300"])
        wt = Path({str(wt)!r})
        sandbox = Sandbox(writable=(wt, Path({str(git_dir)!r})), tmp=Path({str(tmp_path)!r}) / "t")
        agent.run(SessionRequest(task_id="a", worktree=wt, prompt="p", sandbox=sandbox))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while len(marked(marker, named=True)) < 2 and time.monotonic() < deadline:
            assert parent.poll() is None, "the process running the session ended by itself"
            time.sleep(0.1)
        assert len(marked(marker, named=True)) == 2, "the agent and its daemon never started"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert none_left(marker) == []
    finally:
        if parent.poll() is None:
            parent.kill()


def test_missing_program_inside_the_sandbox_is_a_failure_naming_it(tmp_path: Path) -> None:
    """tgflow fails a sandboxed session whose program does not exist with the same one-line
    reason as without a sandbox, naming the program, not bwrap."""
    _, wt, git_dir = checkout(tmp_path)

    result = CommandAgent([MISSING, "{prompt_file}"]).run(
        request(wt, sandbox_for(tmp_path, wt, git_dir))
    )

    assert result.outcome is Outcome.FAILED
    assert MISSING in result.reason and "agent_command" in result.reason
    assert "bwrap" not in result.reason and "Traceback" not in result.reason


def test_program_hidden_by_the_sandbox_is_a_failure_naming_it(tmp_path: Path) -> None:
    """tgflow fails a session whose program exists outside the sandbox but not inside it (in a
    hidden path) naming the program and the sandbox, and how to fix it."""
    _, wt, git_dir = checkout(tmp_path)
    tools = tmp_path / "private-tools"
    tools.mkdir()
    program = tools / "hidden-agent"
    program.write_text("#!/bin/sh\necho ran\n")
    program.chmod(0o755)
    sandbox = sandbox_for(tmp_path, wt, git_dir, hidden=(tools,))

    result = CommandAgent([str(program)]).run(request(wt, sandbox))

    assert result.outcome is Outcome.FAILED
    assert str(program) in result.reason and "sandbox" in result.reason
    assert "agent_command" in result.reason and "ran" not in result.log
    assert len(result.reason.splitlines()) == 1


def test_prompt_over_the_argument_limit_in_the_sandbox_says_how_to_fix(tmp_path: Path) -> None:
    """tgflow fails a sandboxed session whose ``{prompt}`` is over the kernel's argument limit
    naming the agent's program and ``{prompt_file}``, as without a sandbox."""
    _, wt, git_dir = checkout(tmp_path)
    req = request(wt, sandbox_for(tmp_path, wt, git_dir))
    req.prompt = "x" * 3_000_000

    result = CommandAgent(["sh", "-c", "true", "{prompt}"]).run(req)

    assert result.outcome is Outcome.FAILED
    assert "'sh'" in result.reason and "{prompt_file}" in result.reason
    assert "too long" in result.reason and "bwrap" not in result.reason


@pytest.mark.agents
@pytest.mark.parametrize("preset", ["opencode", "claude", "codex", "opencode-server"])
def test_real_agent_cli_works_inside_the_sandbox(
    preset: str, fake_model: FakeModel, tmp_path: Path
) -> None:
    """tgflow runs the real agent CLIs (OpenCode run and served, Claude Code, Codex) inside
    the sandbox: they reach the model on 127.0.0.1, write their state dirs, and the file the
    model asked for is written and committed in the checkout; nothing is written beside it."""
    require_cli(preset.removesuffix("-server"))
    _, wt, git_dir = checkout(tmp_path)
    fake_model.reset(write_and_commit(preset, wt))
    # A served session's tools run in the server's environment, not the session's.
    agent = make_agent(settings_for(preset, fake_model, extra_env=dict(IDENTITY_ENV)))
    req = request(wt, sandbox_for(tmp_path, wt, git_dir), timeout_s=120.0, idle_timeout_s=30.0)
    req.prompt = "Task: demo-1\nWrite hello.txt and commit."

    result = agent.run(req)

    assert result.outcome is Outcome.SUCCEEDED, result.reason + "\n" + result.tail
    assert (wt / "hello.txt").read_text() == "hello\n"
    assert git(wt, "log", "-1", "--format=%s") == "add hello.txt"
    assert fake_model.saw("Task: demo-1")
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["a"]


@pytest.mark.agents
def test_served_opencode_session_ends_with_its_server_and_daemons(
    fake_model: FakeModel, tmp_path: Path
) -> None:
    """tgflow gives a sandboxed opencode-server session a server of its own inside the
    session's sandbox and stops it when the session ends: its tools cannot write beside the
    checkout, a daemon its shell tool double-forked is gone, and so is the server."""
    require_cli("opencode")
    _, wt, git_dir = checkout(tmp_path)
    marker = f"tgflow-served-{uuid.uuid4().hex}"
    hostile = f"{daemon(marker)}; echo x > ../beside.txt"
    fake_model.reset([shell_step("opencode", hostile), {"text": "Done."}])
    settings = settings_for("opencode-server", fake_model, extra_env=dict(IDENTITY_ENV))

    with OpenCodeServerAgent(settings) as agent:
        result = agent.run(request(wt, sandbox_for(tmp_path, wt, git_dir), timeout_s=120.0))
        assert agent.server.proc is None  # the shared server was never started
    left = none_left(marker)

    assert result.outcome is Outcome.SUCCEEDED, result.reason + "\n" + result.tail
    assert any("tool bash completed" in line for line in result.log), result.log
    assert not (tmp_path / "work" / "beside.txt").exists()
    assert left == []
    assert none_left(str(tmp_path / "session-tmp")) == []  # no server left in the sandbox


def test_validation_commands_run_sandboxed(tmp_path: Path) -> None:
    """tgflow runs validation commands (the agent's code under test) in the sandbox: they write
    the checkout and their temp dir, not beside it, and their daemons end with them."""
    _, wt, git_dir = checkout(tmp_path)
    marker = f"tgflow-validation-{uuid.uuid4().hex}"
    sandbox = sandbox_for(tmp_path, wt, git_dir)
    commands = [
        f'touch inside.txt && touch "$TMPDIR/t" && {daemon(marker)}',
        "touch ../outside.txt",
    ]

    result = run_validation(commands, wt, timeout_s=60, sandbox=sandbox)
    left = none_left(marker, within_s=2.0)

    assert not result.ok
    assert result.failed_command == "touch ../outside.txt"
    assert "Read-only file system" in result.output_tail
    assert (wt / "inside.txt").exists() and (tmp_path / "session-tmp" / "t").exists()
    assert not (tmp_path / "work" / "outside.txt").exists()
    assert left == []


def test_a_validation_ahead_of_base_writes_only_its_own_checkout(tmp_path: Path) -> None:
    """A batch validated ahead runs the agents' code in a checkout of tgflow's clone beside it
    (``batch.Ahead``): that checkout and its temp are writable; tgflow's clone, its refs and
    the checkout's link to them are not."""
    origin = make_origin(tmp_path, {"README.md": "demo\n"})
    ws = open_ws(origin, tmp_path / "ws")
    ahead = ws.root / AHEAD_DIR / "0"
    ahead.parent.mkdir()
    git(ws.integration, "worktree", "add", "-q", "--detach", str(ahead), "main")
    main = git(ws.integration, "rev-parse", "main")
    commands = [
        'touch inside.txt && touch "$TMPDIR/t"',
        f"touch {ws.integration}/outside.txt",
        "git update-ref refs/heads/main HEAD^{tree} 2>&1 || git update-ref -d refs/heads/main",
        "echo gitdir: /tmp > .git",
    ]

    results = [
        run_validation([c], ahead, timeout_s=60, sandbox=isolation(ws, None, ahead))
        for c in commands
    ]

    assert [r.ok for r in results] == [True, False, False, False], [r.output_tail for r in results]
    assert (ahead / "inside.txt").exists() and not (ws.integration / "outside.txt").exists()
    assert git(ws.integration, "rev-parse", "main") == main
    assert (ahead / ".git").read_text().startswith(f"gitdir: {ws.integration}")
