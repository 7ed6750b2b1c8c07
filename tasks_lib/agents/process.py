"""Running an agent (or any long command) as a watched subprocess.

Every session gets its own process group so that a timeout, a stall or a cancellation can
kill everything the agent started (shells, language servers, test runners), not just the
top process. Timeouts are ours: Prefect's task timeout cannot interrupt a blocking child.

A tgflow killed by SIGKILL runs none of that: the process it started gets SIGKILL from the
kernel instead (``dies_with``). Only that process: what it started stays, since a process
group has no death signal; the group kill above and the next run's clean-up are the other
guards, and a daemon that double-forked out of the group survives them all (only a PID
namespace, the sandbox's, ends it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

KILL_GRACE_S = 3.0
PR_SET_PDEATHSIG = 1
KEPT_LINES = 2_000  # ProcessResult.lines: the tail; the whole output went through on_line
QUEUED_LINES = 1_000  # a flood waits in the pipe, not in our memory


@dataclass
class ProcessResult:
    returncode: int | None
    lines: list[str] = field(default_factory=list)
    timed_out: bool = False
    stalled: bool = False
    cancelled: bool = False
    duration_s: float = 0.0
    pid: int = 0

    @property
    def interrupted(self) -> bool:
        return self.timed_out or self.stalled or self.cancelled


def kill_group(pid: int, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace_s``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not group_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether a live member of the process group is left (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg succeeds while zombies remain; look for a live member.
    return any(pgrp == pgid for _, pgrp in live_processes().values())


def live_processes() -> dict[int, tuple[int, int]]:
    """Every live (not zombie) process: pid -> (parent pid, process group)."""
    table: dict[int, tuple[int, int]] = {}
    for proc in psutil.process_iter(["ppid", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:  # psutil knows no process groups
            table[proc.pid] = (proc.info["ppid"], os.getpgid(proc.pid))
        except ProcessLookupError:  # gone since the listing
            continue
    return table


def descendants(pids: set[int]) -> set[int]:
    """Every live descendant of ``pids``, whatever session or group it moved to.

    Walks parent links over one snapshot of every live process rather than asking each
    process for its children, so one pass finds them all however deep; an orphan re-parented
    to init is no one's descendant any more, as with ``Process.children``.
    """
    parent = {pid: ppid for pid, (ppid, _) in live_processes().items()}
    found: set[int] = set()
    frontier = set(pids)
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) does not."""
    if pid <= 0:  # psutil refuses these; no process of ours has one
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # it exists; as with killpg's PermissionError, say alive
        return True


def dies_with(parent: int, sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """What a child runs before exec so it gets ``sig`` when ``parent`` ends, even by SIGKILL,
    which runs no clean-up of ours (Linux only; elsewhere nothing).

    The signal is tied to the thread that starts the child, not to the process: start
    processes from a thread that lives as long as they should.
    """
    if sys.platform != "linux":
        return lambda: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child

    def set_signal() -> None:
        prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent ended before the signal was set
            os._exit(1)

    return set_signal


def run_watched(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float,
    idle_timeout_s: float | None,
    on_line: Callable[[str], None] = lambda line: None,
    cancel: threading.Event | None = None,
    stdin_text: str | None = None,
) -> ProcessResult:
    """Run ``argv`` in its own session, streaming merged stdout/stderr line by line.

    Ends the whole process group on wall-clock timeout, on ``idle_timeout_s`` seconds
    without output, or when ``cancel`` is set; and on any exception in the caller's thread
    (KeyboardInterrupt, a Prefect cancellation) before re-raising it. If tgflow is killed
    outright the process gets SIGKILL (``dies_with``); that signal follows the calling
    thread, which is fine for node threads: they live as long as the session they run.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        preexec_fn=dies_with(os.getpid()),
    )
    result = ProcessResult(returncode=None, pid=proc.pid)
    # Bounded both ways: a child printing without pause blocks on its pipe once the queue is
    # full, and only the last KEPT_LINES stay in memory, so a flood costs neither memory nor
    # a backlog to drain after the kill.
    lines: queue.Queue[str | None] = queue.Queue(maxsize=QUEUED_LINES)
    kept: deque[str] = deque(maxlen=KEPT_LINES)
    done = threading.Event()

    def put(item: str | None) -> bool:
        """Queue ``item`` unless the watch ended (then nobody reads: drop it and stop)."""
        while not done.is_set():
            try:
                lines.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not put(line.rstrip("\n")):
                return
        put(None)

    reader = threading.Thread(target=pump, name=f"pump-{proc.pid}", daemon=True)
    reader.start()
    if stdin_text is not None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin_text)
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()

    last_output = time.monotonic()
    try:
        eof = False
        while True:
            # Checked on every pass, so a child printing without pause or one that closed
            # its output cannot outrun our timeouts or a cancellation.
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                pass
            else:
                if line is None:
                    eof = True
                else:
                    last_output = time.monotonic()
                    kept.append(line)
                    on_line(line)
            now = time.monotonic()
            exited = proc.poll() is not None
            if eof and exited:
                break
            if cancel is not None and cancel.is_set():
                result.cancelled = True
            elif now - started > timeout_s:
                result.timed_out = True
            elif idle_timeout_s is not None and now - last_output > idle_timeout_s:
                result.stalled = True
            if result.interrupted:
                kill_group(proc.pid)
                break
            if exited and not eof and now - last_output > 2.0:
                # The leader is gone; a leftover child holds the pipe open. Stop it.
                kill_group(proc.pid)
                break
        result.returncode = proc.wait(timeout=KILL_GRACE_S * 2)
        # The leader may exit while children it spawned keep the group alive.
        if group_alive(proc.pid):
            kill_group(proc.pid)
    except BaseException:
        kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_GRACE_S)
        raise
    finally:
        done.set()  # a pump blocked on the full queue gives up instead of waiting forever
        reader.join(timeout=1)
        while True:  # at most QUEUED_LINES left
            try:
                leftover = lines.get_nowait()
            except queue.Empty:
                break
            if leftover is not None:
                kept.append(leftover)
                on_line(leftover)
        result.lines = list(kept)
        result.duration_s = time.monotonic() - started
    return result
