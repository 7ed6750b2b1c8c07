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
from typing import IO

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
    out: str  # stdout without its surrounding whitespace
    err: str

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
    result = GitResult(status, out.strip(), err.strip())
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


class ObjectReader:
    """One ``git cat-file --batch-command`` that answers many reads of one repository: what a
    name resolves to and an object's contents, each in a write and a read where a command of
    its own costs 2-5 ms (a node asks some fifteen: its base, refs, task file, conventions).

    It serves tgflow's own clone only, never a checkout an agent worked in. Nothing it
    answers is stale: git resolves a name anew for each request (refs are read from disk,
    ``packed-refs`` is checked against its stat) and looks again for an object it does not
    find (a pack fetched since). One request at a time (the node threads share it); a
    reader found dead, inherited by a forked child, or left reading a repository that was
    deleted and made again at its path (its ``.git`` is another file now), is replaced. That
    last is looked for only when the reader finds nothing: a reader of a deleted repository
    finds none of its refs or loose objects, and an object it still finds in a pack it holds
    open is that object (its id is its contents), so a stat per answer would buy nothing."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self._git_dir = Path(cwd) / ".git"
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._repo: tuple[int, int] | None = None  # the (device, inode) of its ``.git``

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

    def close(self) -> None:
        with self._lock:
            self._stop()

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
                    if None in answers and attempt == 0 and _identity(self._git_dir) != self._repo:
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

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None or self._pid != os.getpid():
            self._stop()
            self._proc, self._pid, self._repo = None, os.getpid(), _identity(self._git_dir)
            ceiling = {"GIT_CEILING_DIRECTORIES": str(Path(self.cwd).resolve().parent)}
            self._proc = subprocess.Popen(
                ["git", *PINNED, "cat-file", "--batch-command", "--buffer"],
                cwd=self.cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, **ENV, **ceiling},
            )
        return self._proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._pid == os.getpid():
            proc.kill()
            proc.wait()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


_READERS: dict[Path, ObjectReader] = {}  # most recently asked for last
_READERS_GUARD = threading.Lock()
MAX_READERS = 8  # a process works on one clone or a few (tests: many, one after another)


def reader(cwd: Path) -> ObjectReader:
    """The process's reader of the repository at ``cwd``; the least recently asked for is
    closed when there would be more than ``MAX_READERS``, the rest at exit."""
    with _READERS_GUARD:
        found = _READERS.pop(cwd, None) or ObjectReader(cwd)
        _READERS[cwd] = found
        if len(_READERS) > MAX_READERS:
            _READERS.pop(next(iter(_READERS))).close()
        return found


@atexit.register
def _close_readers() -> None:
    for each in list(_READERS.values()):
        each.close()
