"""The one way tgflow runs git, so every command gets the same environment and the same errors.

``subprocess`` runs them (stdin closed, or fed ``input``), in a folder that must
exist (GitPython's ``Git.execute``, used before, ran a command whose folder was gone in the
process's own folder instead, which may be a person's repository) and, with a timeout, in a
process group of their own, killed whole when it passes. A command costs what git costs
(GitPython's bookkeeping added about 0.7 ms to each, and a node runs some twenty). Nothing
may wait on a person: a run may have no terminal in front of it (a deployment, a served
flow), so git never prompts for credentials.
Output is parsed (push verdicts, ``fatal:`` lines), so git speaks the C locale.

An agent shares tgflow's clone (its worktree's config is the clone's), so nothing the
repository controls may run code in tgflow's commands: no hooks (``core.hooksPath`` is
pinned), no fsmonitor, no system config; and git never searches above the directory it is
given, so a worktree whose ``.git`` is gone fails instead of finding an enclosing checkout
(the user's, when the workspace sits inside it).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from tasks_lib.git import WorkspaceError

ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "C", "GIT_CONFIG_NOSYSTEM": "1"}
# Before every command: the command line outranks any config file an agent can write.
PINNED = [
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "maintenance.auto=false",
]


@dataclass(frozen=True)
class GitResult:
    status: int
    stdout: str  # as git wrote it
    err: str

    @property
    def out(self) -> str:
        """Standard output without its surrounding whitespace: a sha, a ref, a verdict."""
        return self.stdout.strip()

    @property
    def paths(self) -> list[str]:
        """The names a ``-z`` command listed, each exactly as it is: not quoted as git
        prints names outside ASCII, no leading space taken for whitespace around output."""
        return [p for p in self.stdout.split("\0") if p]

    @property
    def output(self) -> str:
        """Both streams, for messages: git puts its reasons on stderr, verdicts on stdout."""
        return "\n".join(s for s in (self.err, self.out) if s)

    @property
    def remote_message(self) -> str:
        """What the other side said (its ``remote:`` lines, e.g. a pre-receive hook's reason),
        on one line: the person needs the origin's words, not git's "failed to push"."""
        lines = (x for x in self.err.splitlines() if x.startswith("remote:"))
        return "; ".join(x for x in (x.removeprefix("remote:").strip() for x in lines) if x)


class GitError(WorkspaceError):
    """A git command failed; what it said is kept for the message and for callers that parse."""

    def __init__(self, args: list[str], cwd: Path, status: int, output: str) -> None:
        self.argv = args
        self.cwd = cwd
        self.status = status
        self.output = output
        super().__init__(f"git {' '.join(args)} failed in {cwd} (exit {status}): {output.strip()}")


class GitTimeout(GitError):
    """A git command that did not finish in time (an origin that does not answer)."""

    def __init__(self, args: list[str], cwd: Path, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(args, cwd, -1, f"no answer within {timeout_s:g}s")


def run_git(
    cwd: Path,
    *args: str,
    identity: tuple[str, str] | None = None,
    check: bool = True,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> GitResult:
    """Run ``git args`` in ``cwd``. ``identity`` (name, email) is passed per command and never
    written to any config; ``check`` raises ``GitError`` on a non-zero exit. A timeout always
    raises (``GitTimeout``): there is no exit status to hand back. ``input`` is the command's
    standard input (``update-ref --stdin``: many ref changes in one command)."""
    prefix = (
        ["-c", f"user.name={identity[0]}", "-c", f"user.email={identity[1]}"] if identity else []
    )
    # git may look at cwd itself but never above it (a ceiling is never entered).
    ceiling = {"GIT_CEILING_DIRECTORIES": str(Path(cwd).resolve().parent)}
    argv = ["git", *PINNED, *prefix, *args]
    full = {**os.environ, **ENV, **ceiling, **(env or {})}
    data = None if input is None else input.encode("utf-8")
    if not Path(cwd).is_dir():  # never run where the process stands instead
        raise GitError(list(args), cwd, 128, f"no such folder: {cwd}")
    try:
        status, out, err = _execute(argv, Path(cwd), full, data, timeout_s)
    except subprocess.TimeoutExpired:
        raise GitTimeout(list(args), cwd, timeout_s or 0) from None
    result = GitResult(status, out, err.strip())
    if check and result.status != 0:
        raise GitError(list(args), cwd, result.status, result.output)
    return result


def _execute(
    argv: list[str], cwd: Path, env: dict[str, str], input: bytes | None, timeout_s: float | None
) -> tuple[int, str, str]:
    """One command, to its end: (exit status, stdout, stderr). ``input`` is written to its
    standard input while its output is read (``communicate``: no size of either blocks),
    else stdin is closed. Past ``timeout_s`` its whole process group is killed (git's
    helpers too: a remote helper, an ssh) and ``TimeoutExpired`` raised."""
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=timeout_s is not None,
    ) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    decode = functools.partial(bytes.decode, encoding="utf-8", errors="surrogateescape")
    return proc.returncode, decode(out), decode(err)


class _Resident:
    """One long-lived git process of one repository (tgflow's clone, never a checkout an
    agent worked in), asked many times where a command each would cost 2-5 ms. One request
    at a time (the node threads share it). A process found dead, inherited by a forked
    child, or serving a repository that was deleted and made again at its path (its
    ``.git`` is another file now), is replaced."""

    ARGS: tuple[str, ...] = ()
    STDERR: int = subprocess.DEVNULL

    def __init__(self, cwd: Path, env: Mapping[str, str] | None = None) -> None:
        self.cwd = cwd
        self._env = dict(env or {})
        self._git_dir = Path(cwd) / ".git"
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._repo: tuple[int, int, int, int] | None = None  # see ``_identity``

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None or self._pid != os.getpid():
            self._stop()
            self._proc, self._pid, self._repo = None, os.getpid(), _identity(self._git_dir)
            ceiling = {"GIT_CEILING_DIRECTORIES": str(Path(self.cwd).resolve().parent)}
            self._proc = subprocess.Popen(
                ["git", *PINNED, *self.ARGS],
                cwd=self.cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.STDERR,
                env={**os.environ, **ENV, **ceiling, **self._env},
            )
        return self._proc

    def _replaced(self) -> bool:
        """Its repository is no longer the one it started in."""
        return _identity(self._git_dir) != self._repo

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._pid == os.getpid():
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


class ObjectReader(_Resident):
    """One ``git cat-file --batch-command`` that answers many reads of one repository: what a
    name resolves to and an object's contents, each in a write and a read where a command of
    its own costs 2-5 ms (a node asks some fifteen: its base, refs, task file, conventions).

    Nothing it answers is stale: git resolves a name anew for each request (refs are read
    from disk, ``packed-refs`` is checked against its stat) and looks again for an object it
    does not find (a pack fetched since). A repository made again at its path is looked for
    only when the reader finds nothing: a reader of a deleted repository
    finds none of its refs or loose objects, and an object it still finds in a pack it holds
    open is that object (its id is its contents), so a stat per answer would buy nothing."""

    ARGS = ("cat-file", "--batch-command", "--buffer")

    def info(self, name: str) -> tuple[str, str] | None:
        """(object id, type) of what ``name`` (any revision expression) names, or None."""
        return self.infos([name])[0]

    def infos(self, names: list[str]) -> list[tuple[str, str] | None]:
        """``info`` of each name, all in one round trip to the reader."""
        return [None if f is None else f[:2] for f in self._ask([("info", n) for n in names])]

    def contents(self, name: str) -> tuple[str, bytes] | None:
        """(type, bytes) of the object ``name`` names, or None."""
        found = self._ask([("contents", name)])[0]
        return None if found is None else (found[1], found[2])

    def _ask(self, requests: list[tuple[str, str]]) -> list[tuple[str, str, bytes] | None]:
        """The answers to (command, name) requests, sent together (``--buffer``: git answers
        at the ``flush``)."""
        # One request per line: a name with a newline (or none) is no object's.
        asked = [(c, n) for c, n in requests if n and "\n" not in n]
        with self._lock:
            for attempt in range(2):  # a reader that died (killed, its repository moved) again
                proc = self._started()
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    lines = "".join(f"{command} {name}\n" for command, name in asked)
                    proc.stdin.write(f"{lines}flush\n".encode())
                    proc.stdin.flush()
                    answers = [self._answer(proc.stdout, command) for command, _ in asked]
                    if None in answers and attempt == 0 and self._replaced():
                        raise BrokenPipeError  # reading a repository since replaced
                    found = dict(zip(asked, answers, strict=True))
                    return [found.get(request) for request in requests]
                except (OSError, ValueError):
                    self._stop()
            raise GitError(["cat-file", "--batch-command"], self.cwd, -1, "the reader died")

    @staticmethod
    def _answer(out: IO[bytes], command: str) -> tuple[str, str, bytes] | None:
        header = out.readline()
        if not header:
            raise BrokenPipeError
        line = header.decode().rstrip("\n")
        if line.endswith((" missing", " ambiguous")):  # "<name> missing"
            return None
        sha, kind, size = line.split(" ")
        data = b""
        if command == "contents":
            data = out.read(int(size) + 1)  # and its newline
            if len(data) != int(size) + 1:
                raise BrokenPipeError
        return sha, kind, data[:-1]


class RefWriter(_Resident):
    """One ``git update-ref --stdin`` that makes many transactions (``start`` ... ``commit``,
    as git allows since 2.27), each a write and a read where a command of its own costs 2-5
    ms (a node makes three or four: its branch, what it collected, what a push moved).

    Each transaction is git's own: its refs are locked and read at ``prepare`` (a loose ref
    from disk, ``packed-refs`` checked against its stat), so nothing is decided on what the
    process saw before. A transaction git refuses ends the process (``fatal:``, on stderr):
    that is raised as the ``GitError`` the command would have raised, and the next
    transaction starts a new one."""

    ARGS = ("update-ref", "--stdin")
    STDERR = subprocess.PIPE
    _STEPS = ("start", "prepare", "commit")

    def transaction(self, lines: list[str]) -> None:
        """``update-ref --stdin`` instructions (``update``, ``delete``...), all or none."""
        if any("\n" in line for line in lines):
            raise ValueError(f"a ref instruction spans lines: {lines!r}")
        with self._lock:
            if self._proc is not None and self._replaced():
                self._stop()
            for attempt in range(2):  # a writer found dead before it was asked, once
                proc = self._started()
                assert proc.stdin is not None and proc.stdout is not None
                body = "".join(f"{line}\n" for line in lines)
                try:
                    proc.stdin.write(f"start\n{body}prepare\ncommit\n".encode())
                    proc.stdin.flush()
                    said = [proc.stdout.readline() for _ in self._STEPS]
                except OSError:
                    said = []
                if said == [f"{step}: ok\n".encode() for step in self._STEPS]:
                    return
                refused = said[:1] == [b"start: ok\n"]  # git read the transaction, then died
                status, err = self._ended(proc)
                if refused or attempt == 1:
                    raise GitError(["update-ref", "--stdin"], self.cwd, status, err)

    def _ended(self, proc: subprocess.Popen[bytes]) -> tuple[int, str]:
        """The exit status and stderr of a writer that stopped answering."""
        assert proc.stderr is not None
        try:
            proc.wait(timeout=10)
            err = proc.stderr.read().decode("utf-8", "replace").strip()
        except subprocess.TimeoutExpired:
            err = "the ref writer stopped answering"
        self._stop()
        return proc.returncode if proc.returncode is not None else -1, err


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """The repository at ``path`` (its ``.git``) and its folder, by (device, inode): the
    folder is a resident's own working folder, held by it, so a folder made again at that
    path has another inode, even where the file system reuses those of deleted files."""
    try:
        git_dir, folder = path.stat(), path.parent.stat()
    except OSError:
        return None
    return git_dir.st_dev, git_dir.st_ino, folder.st_dev, folder.st_ino


_Key = tuple[type["_Resident"], Path, tuple[tuple[str, str], ...]]
_RESIDENTS: dict[_Key, _Resident] = {}  # most recently asked for last
_RESIDENTS_GUARD = threading.Lock()
MAX_RESIDENTS = 16  # a process works on one clone or a few (tests: many, one after another)


R = TypeVar("R", bound=_Resident)


def _resident(kind: type[R], cwd: Path, env: Mapping[str, str] | None) -> R:
    """The process's ``kind`` of ``cwd`` (with ``env``); the least recently asked for is
    closed when there would be more than ``MAX_RESIDENTS``, the rest at exit."""
    key: _Key = (kind, cwd, tuple(sorted((env or {}).items())))
    with _RESIDENTS_GUARD:
        found = _RESIDENTS.pop(key, None) or kind(cwd, env)
        _RESIDENTS[key] = found
        if len(_RESIDENTS) > MAX_RESIDENTS:
            _RESIDENTS.pop(next(iter(_RESIDENTS))).close()
        assert isinstance(found, kind)
        return found


def reader(cwd: Path) -> ObjectReader:
    """The process's reader of the repository at ``cwd``."""
    return _resident(ObjectReader, cwd, None)


def writer(cwd: Path, identity: tuple[str, str]) -> RefWriter:
    """The process's ref writer of the repository at ``cwd``; its reflog entries name
    ``identity`` (name, email), as tgflow's commands do."""
    name, email = identity
    env = {"GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    return _resident(RefWriter, cwd, env)


@atexit.register
def _close_residents() -> None:
    for each in list(_RESIDENTS.values()):
        each.close()
