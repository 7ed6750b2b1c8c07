"""What every fault case must still find true at its end, whatever the fault was.

A case snapshots the origin (``snapshot``) before the fault, then calls ``assert_invariants``
after it: no commit an agent made is lost, main passes validation, nothing the case started
still runs, no traceback reached a person, user refs and text are as they were, and no secret
leaked. Each check is also usable alone, and each failure says what was lost and where.

Nothing here knows how tgflow lays out its workspace: commits are found by the marker a case
puts in their messages, in every git directory under the folders it names, and processes by
the marker it puts in their command line or environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Refs tgflow itself creates, moves and deletes on the origin; every other ref is the user's.
TGFLOW_PREFIXES = ("refs/heads/tgflow/", "refs/tgflow/")
BASE = "main"
TRACEBACK = "Traceback (most recent call last)"
TGFLOW = Path(sys.executable).parent / "tgflow"
MARKER_VAR = "TGFLOW_FAULT_MARKER"


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr.strip()}"
    return done.stdout


@dataclass(frozen=True)
class Snapshot:
    """The origin as the user left it before the fault: the refs that are not tgflow's."""

    user_refs: Mapping[str, str] = field(default_factory=dict)


def add_user_refs(origin: Path, base: str = BASE) -> None:
    """Refs a user keeps on the origin beside tgflow's (a branch, a tag), so a case has some
    for ``assert_user_refs_intact`` to guard."""
    _git("--git-dir", str(origin), "branch", "experiment/mine", base)
    _git("--git-dir", str(origin), "tag", "v1", base)


def marked_env(marker: str, prefect_home: Path) -> dict[str, str]:
    """The environment of a ``tgflow`` a case starts as a user would: a Prefect home of its
    own (its own temporary server and database) and ``marker``, which every process it starts
    inherits, for ``assert_no_survivor``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**env, "PREFECT_HOME": str(prefect_home), MARKER_VAR: marker}


def user_refs(origin: Path, base: str = BASE) -> dict[str, str]:
    """Ref name -> sha of every ref on ``origin`` outside tgflow's prefixes and the base
    branch (which tgflow moves forward by design)."""
    listing = _git("--git-dir", str(origin), "for-each-ref", "--format=%(refname) %(objectname)")
    pairs = (line.split(" ", 1) for line in listing.splitlines() if line)
    return {
        name: sha
        for name, sha in pairs
        if not name.startswith(TGFLOW_PREFIXES) and name != f"refs/heads/{base}"
    }


def snapshot(origin: Path, base: str = BASE) -> Snapshot:
    return Snapshot(user_refs=user_refs(origin, base))


def git_dirs(root: Path) -> list[Path]:
    """Every git directory under ``root`` (clones, bare repositories, worktrees' git dirs)."""
    return sorted(
        head.parent
        for head in root.rglob("HEAD")
        if (head.parent / "objects").is_dir() or (head.parent / "commondir").is_file()
    )


def marked_commits(roots: Iterable[Path], marker: str) -> set[str]:
    """Shas of the commits whose message holds ``marker``, on any ref of any git directory
    under ``roots``: the agent's commits, wherever tgflow or the agent left them."""
    found: set[str] = set()
    for root in roots:
        for git_dir in git_dirs(root):
            out = _git(
                "--git-dir", str(git_dir), "log", "--all", "--format=%H", "-F", f"--grep={marker}"
            )
            found.update(out.split())
    return found


def assert_no_lost_commit(origin: Path, commits: Iterable[str]) -> None:
    """Every commit in ``commits`` is reachable from some ref of ``origin``."""
    reachable = set(_git("--git-dir", str(origin), "rev-list", "--all").split())
    lost = sorted(set(commits) - reachable)
    assert not lost, (
        f"{len(lost)} agent commit(s) on no ref of the origin {origin}: {', '.join(lost)}"
    )


def assert_main_validates(origin: Path, commands: Sequence[str], base: str = BASE) -> None:
    """A fresh clone of the origin's ``base`` passes each validation command."""
    with tempfile.TemporaryDirectory(prefix="tgflow-fault-main-") as tmp:
        clone = Path(tmp) / "main"
        _git("clone", "-q", "--branch", base, str(origin), str(clone))
        for command in commands:
            done = subprocess.run(
                ["bash", "-c", command], cwd=clone, capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, (
                f"{base} of {origin} fails validation `{command}` (exit {done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-500:]}"
            )


def _zombie(proc: Path) -> bool:
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def survivors(marker: str) -> list[int]:
    """Live processes (not this one) whose command line or environment holds ``marker``."""
    needle = marker.encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            held = (
                needle in (proc / "cmdline").read_bytes()
                or needle in (proc / "environ").read_bytes()
            )
            if held and not _zombie(proc):
                found.append(int(proc.name))
        except (OSError, IndexError):  # gone meanwhile, or not ours to read
            continue
    return found


def assert_no_survivor(marker: str, grace_s: float = 10.0) -> None:
    """Nothing holding ``marker`` runs after ``grace_s`` (a dying parent's children get their
    signal asynchronously). Leftovers are killed before the assertion fails, so one failing
    case does not leave processes behind for the next."""
    deadline = time.monotonic() + grace_s
    while (left := survivors(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = [_describe(pid) for pid in left]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    assert not left, f"{len(left)} process(es) outlived their owner: {'; '.join(described)}"


def _describe(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        argv = "?"
    return f"pid {pid}: {argv.strip()[:200]}"


def assert_no_traceback(*texts: str) -> None:
    """No text a person reads holds a Python traceback."""
    shown = [t for t in texts if TRACEBACK in t]
    assert not shown, f"a traceback reached the user: {shown[0][-1500:]}"


def assert_user_refs_intact(origin: Path, before: Snapshot, base: str = BASE) -> None:
    """The user's refs on the origin are exactly as they were: none deleted, moved or added."""
    now = user_refs(origin, base)
    changed = {
        name: (before.user_refs.get(name), now.get(name))
        for name in before.user_refs.keys() | now.keys()
        if before.user_refs.get(name) != now.get(name)
    }
    assert not changed, f"user refs changed on {origin} (before, after): {changed}"


def assert_user_text_intact(
    origin: Path, texts: Mapping[str, str], ref: str = f"refs/heads/{BASE}"
) -> None:
    """Each file of ``texts`` on ``ref`` still holds the text a person wrote in it."""
    for rel, text in texts.items():
        content = _git("--git-dir", str(origin), "show", f"{ref}:{rel}")
        assert text in content, f"{rel} on {ref} of {origin} lost the user's text {text!r}"


def assert_no_secret(secrets: Iterable[str], *texts: str) -> None:
    """No secret value appears in any of ``texts``."""
    for secret in secrets:
        leaked = [t for t in texts if secret in t]
        if leaked:
            at = leaked[0].index(secret)
            around = leaked[0][max(0, at - 150) : at + len(secret) + 150]
            raise AssertionError(f"a secret leaked: {around.replace(secret, '<SECRET>')!r}")


def assert_invariants(
    origin: Path,
    *,
    before: Snapshot,
    validate: Sequence[str],
    agent_commits: Iterable[str] = (),
    marker: str | None = None,
    output: Sequence[str] = (),
    user_text: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Every invariant of the fault suite, checked at a case's end.

    ``output``: whatever a person saw (terminal text, node reasons); ``marker``: the string
    the case put into the command line or environment of everything it started.
    """
    assert_no_lost_commit(origin, agent_commits)
    assert_main_validates(origin, validate)
    if marker is not None:
        assert_no_survivor(marker)
    assert_no_traceback(*output)
    assert_user_refs_intact(origin, before)
    assert_user_text_intact(origin, user_text or {})
    if secrets := list(secrets):
        history = _git("--git-dir", str(origin), "log", "-p", "--all")
        assert_no_secret(secrets, *output, history)
