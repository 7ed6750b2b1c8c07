"""Running an agent (or any long command) as a watched subprocess.

Every session gets its own process group so that a timeout, a stall or a cancellation can
kill everything the agent started (shells, language servers, test runners), not just the
top process. Timeouts are ours: Prefect's task timeout cannot interrupt a blocking child.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

KILL_GRACE_S = 3.0


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
    (KeyboardInterrupt, a Prefect cancellation) before re-raising it.
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
    )
    result = ProcessResult(returncode=None, pid=proc.pid)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

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
                    result.lines.append(line)
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
        reader.join(timeout=1)
        while True:
            try:
                leftover = lines.get_nowait()
            except queue.Empty:
                break
            if leftover is not None:
                result.lines.append(leftover)
                on_line(leftover)
        result.duration_s = time.monotonic() - started
    return result
