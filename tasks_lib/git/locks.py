"""Who may move what: one merge at a time per origin within a process, one run at a time per
clone across processes, one writer of the clone's config at a time.

The merge lock guards base and the integration worktree (merging, validating the merged
tree, committing statuses, pushing base); a task's own refs and checkout need none, nor does
reading base at its settled commit (``Workspace.settled``). It is fair (``FairLock``): nodes
are served in the order they asked, so no branch waits for ever behind busier ones; the
merge queue in front of it batches whoever waits. The run lock keeps a second run (a CLI
run beside a deployment run) from reconciling, and so retiring the worktrees, under the
first one's agents.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from filelock import FileLock, Timeout

from tasks_lib.git.origin import normalise_origin


class FairLock:
    """A lock served first come, first served, used as ``with lock:`` like ``threading.Lock``
    (which lets any waiter win, so a node could wait behind others for ever).

    Waiters queue by arrival; ``priority()`` queues ahead of every plain waiter (behind
    earlier priority ones): for a node whose resolved conflict would go stale if others
    merged first. That cannot starve plain waiters: a node asks for priority at most once
    per conflict round, and the rounds are bounded. Not reentrant, like ``threading.Lock``;
    a thread taking it twice gets an error instead of a deadlock.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._queues: tuple[deque[object], deque[object]] = (deque(), deque())  # first, plain
        self._holder: int | None = None
        self._across: Callable[[], AbstractContextManager[object]] | None = None
        self._held_across: AbstractContextManager[object] | None = None

    def across_processes(self, lock: Callable[[], AbstractContextManager[object]] | None) -> None:
        """Also hold ``lock()`` (a lock other processes and machines share, e.g. the flow's
        Prefect concurrency limit) whenever this lock is held; None: this process only. The
        local turn comes first, so the threads of one process queue here, in order, and only
        one of them at a time waits for the others' machines."""
        self._across = lock

    @property
    def shared(self) -> bool:
        """Other processes take turns with this one (``across_processes``): they push too."""
        return self._across is not None

    @property
    def waiting(self) -> int:
        """Threads queued for the lock now."""
        with self._changed:
            return sum(len(q) for q in self._queues)

    def acquire(self, *, priority: bool = False, on_wait: Callable[[], None] | None = None) -> None:
        """Take the lock in turn. ``on_wait`` runs first when the lock cannot be taken at once
        (held, or others are ahead), the thread keeping its place in the queue meanwhile:
        for what must be done before a wait of unknown length, and only then."""
        me, queue = object(), self._queues[0 if priority else 1]
        with self._changed:
            if self._holder == threading.get_ident():
                raise RuntimeError("this thread already holds the merge lock (it is not reentrant)")
            queue.append(me)
            must_wait = self._holder is not None or self._next() is not me
        try:
            if must_wait and on_wait is not None:
                on_wait()
            with self._changed:
                while self._holder is not None or self._next() is not me:
                    self._changed.wait()
                queue.popleft()
                self._holder = threading.get_ident()
        except BaseException:  # interrupted while queued: leave the queue to the others
            with self._changed:
                if me in queue:
                    queue.remove(me)
                self._changed.notify_all()
            raise
        if self._across is not None:
            held = self._across()
            try:
                held.__enter__()
            except BaseException:
                self.release()
                raise
            self._held_across = held

    def release(self) -> None:
        if self._holder != threading.get_ident():
            raise RuntimeError("release of a merge lock this thread has not held")
        held, self._held_across = self._held_across, None
        try:
            if held is not None:
                held.__exit__(None, None, None)
        finally:
            with self._changed:
                self._holder = None
                self._changed.notify_all()

    def _next(self) -> object | None:
        first, plain = self._queues
        return first[0] if first else plain[0] if plain else None

    @contextmanager
    def priority(self) -> Iterator[None]:
        """Hold the lock, served before every plain waiter."""
        self.acquire(priority=True)
        try:
            yield
        finally:
            self.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


Held = TypeVar("Held")
_merge_locks: dict[str, FairLock] = {}
_merge_locks_guard = threading.Lock()  # guards every per-origin table here


def merge_lock_for(origin: str) -> FairLock:
    """One lock per origin for the whole process (importable, so a served flow can share it)."""
    return _one_per_origin(_merge_locks, origin, FairLock)


_config_locks: dict[str, threading.Lock] = {}


def config_lock_for(origin: str) -> threading.Lock:
    """One lock per origin around writes to the clone's config: git gives up at once when
    another command holds ``config.lock`` (no retry, unlike ref locks), and nodes that hold no
    merge lock write it too (a branch published, a branch deleted)."""
    return _one_per_origin(_config_locks, origin, threading.Lock)


def _one_per_origin(table: dict[str, Held], origin: str, make: Callable[[], Held]) -> Held:
    key = normalise_origin(origin)
    with _merge_locks_guard:
        if key not in table:
            table[key] = make()
        return table[key]


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
