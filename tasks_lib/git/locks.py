"""Who may move what: one merge at a time per origin within a process, one run at a time per
clone across processes.

The merge lock guards the shared refs of the clone (creating or removing worktrees and
branches, merging, pushing); an agent session in its own worktree needs none. The run lock
keeps a second run (a CLI run beside a deployment run) from reconciling, and so retiring the
worktrees, under the first one's agents.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from tasks_lib.git.origin import normalise_origin

_merge_locks: dict[str, threading.Lock] = {}
_merge_locks_guard = threading.Lock()


def merge_lock_for(origin: str) -> threading.Lock:
    """One lock per origin for the whole process (importable, so a served flow can share it)."""
    key = normalise_origin(origin)
    with _merge_locks_guard:
        return _merge_locks.setdefault(key, threading.Lock())


@contextmanager
def run_lock(root: Path, on_wait: Callable[[str], None] = lambda holder: None) -> Iterator[None]:
    """Hold the clone under ``root`` for one run. A second run waits, told who holds it (the
    holder writes that beside the lock); the lock of a run that dies is freed with it."""
    root.mkdir(parents=True, exist_ok=True)
    lock, holder = FileLock(root / "run.lock"), root / "run.holder"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        held_by = holder.read_text(encoding="utf-8").strip() if holder.is_file() else ""
        on_wait(held_by or "another tgflow run")
        lock.acquire()
    try:
        holder.write_text(
            f"tgflow run in pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            encoding="utf-8",
        )
        yield
    finally:
        holder.unlink(missing_ok=True)  # before the release: a free clone names no holder
        lock.release()
