"""The merge queue: branches that finished develop land in arrival order, several at a time.

Post-merge validation is the serial part of a run: with one branch per validation, a run
whose validation takes minutes waits for it node after node. So whoever holds the merge
lock serves every branch waiting then (up to ``cap``) as one batch: each merged in order,
the result validated once. When that fails, the batch is bisected (as Bors and GitHub's merge
queue do): each half is tried on the base the previous half left, so every branch that does
not break the build still lands and the culprits are found in about ``2 log2(n)`` trials
instead of ``n``. A half whose tree is known to fail already (the left half landed whole, so
base + right half is the tree that just failed) is split without running it again.

Validated ahead: while the server waits for the validation of the batch it serves (its whole
batch's first), the oldest waiting branches (up to ``cap``) are reserved as the next batch
(``reserve``) and validated on top of the head that validation would leave, in a checkout of
their own. The next batch is then served first whatever happens; its trial reuses that
validation when the batch before landed whole on that head (else it is stopped and the batch
tried as usual). So a branch that arrives while another batch validates no longer waits for
that validation to end before its own starts (Zuul's and GitHub's merge queues validate
ahead the same way). A failure seen beside the other validation is run again alone before
it sends a branch back (``integrate``).

Plain Python over opaque items: the node's integrate step supplies the git (``Trial``), the
integration benchmark a simulated clock, and the order and bisection are the same for both.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tasks_lib.git.locks import FairLock

T = TypeVar("T")


@dataclass
class Trial(Generic[T]):
    """What merging some items onto the current base gave: ``passed`` means base now holds
    ``merged`` (validated); else base is back where it was. Items that conflicted merged
    nothing and are left out of every later trial (they go back to their agents)."""

    passed: bool
    merged: list[T]
    conflicted: list[T] = field(default_factory=list)


@dataclass
class BatchOutcome(Generic[T]):
    landed: list[T] = field(default_factory=list)  # in the order they were merged
    culprits: list[T] = field(default_factory=list)  # each fails validation on the base it met
    conflicted: list[T] = field(default_factory=list)
    trials: int = 0  # validations run (a known failure is not run again)


def land_batch(items: Sequence[T], trial: Callable[[Sequence[T]], Trial[T]]) -> BatchOutcome[T]:
    """Land as many of ``items`` as pass, in order; bisect on failure (the module's doc)."""
    out: BatchOutcome[T] = BatchOutcome()

    def go(batch: Sequence[T], known_to_fail: bool) -> None:
        if not batch:
            return
        if not known_to_fail:
            tried = trial(batch)
            out.trials += 1
            out.conflicted += tried.conflicted
            if tried.passed:
                out.landed += tried.merged
                return
            batch = tried.merged
            if not batch:
                return
        if len(batch) == 1:
            out.culprits.append(batch[0])
            return
        left, right = batch[: len(batch) // 2], batch[len(batch) // 2 :]
        landed, conflicted = len(out.landed), len(out.conflicted)
        go(left, False)
        whole = len(out.landed) - landed == len(left) and len(out.conflicted) == conflicted
        go(right, whole)

    go(items, False)
    return out


@dataclass
class _Ticket(Generic[T]):
    item: T
    queued: bool = False
    served: bool = False
    error: BaseException | None = None


class MergeQueue(Generic[T]):
    """Branches waiting to land, in arrival order, served under the merge lock.

    A node calls ``land`` and blocks until its branch was served, by its own thread or by
    the thread that held the lock before it (that one took the whole waiting batch). No
    thread of its own: the server is whichever node holds the lock, so a queue costs
    nothing when nobody waits.
    """

    def __init__(self, lock: FairLock) -> None:
        self._lock = lock
        self._guard = threading.Lock()
        self._waiting: deque[_Ticket[T]] = deque()
        self._reserved: list[_Ticket[T]] | None = None  # the next batch (``reserve``)
        self._on_join: Callable[[], None] | None = None

    @property
    def waiting(self) -> int:
        with self._guard:
            return len(self._waiting)

    def reserve(self, cap: int, start: Callable[[], None]) -> list[T]:
        """Make the oldest waiting items (up to ``cap``) the next batch served, whatever
        happens meanwhile, and return them: for validating them ahead (the module's doc).
        Nothing when a next batch is reserved already, nothing waits, or the validation
        ``start`` was called for has ended (a thread that joined then calls it late)."""
        with self._guard:
            if self._on_join is not start or self._reserved is not None or not self._waiting:
                return []
            self._reserved = [self._waiting.popleft() for _ in range(min(cap, len(self._waiting)))]
            return [t.item for t in self._reserved]

    @contextmanager
    def while_validating(self, start: Callable[[], None]) -> Iterator[None]:
        """Call ``start`` now and whenever an item joins the queue until the block ends (the
        server is validating: what joins may be validated ahead). ``start`` runs in the
        thread that joined too, unlocked, so it must be safe to run twice at once."""
        with self._guard:
            self._on_join = start
        try:
            start()
            yield
        finally:
            with self._guard:
                self._on_join = None

    def land(
        self,
        item: T,
        cap: int,
        serve: Callable[[list[T]], None],
        before_wait: Callable[[T], None] | None = None,
    ) -> None:
        """Queue ``item``; whoever holds the lock calls ``serve`` with up to ``cap`` waiting
        items, oldest first (``serve`` records each item's outcome on the item). An error
        ``serve`` raises reaches every item of its batch. ``before_wait(item)`` runs when the
        item must wait for the lock, before it joins the queue (so nobody serves it while
        that runs)."""
        ticket: _Ticket[T] = _Ticket(item)

        def join(waits: bool) -> None:
            if waits and before_wait is not None:
                before_wait(item)
            with self._guard:
                self._waiting.append(ticket)
                ticket.queued = True
                started = self._on_join
            if started is not None:
                started()

        try:
            self._lock.acquire(on_wait=lambda: join(True))
            try:
                if not ticket.queued:  # the lock was free: the item is served now
                    join(False)
                while not ticket.served:
                    with self._guard:
                        batch, self._reserved = self._reserved or [], None
                        if not batch:
                            size = min(cap, len(self._waiting))
                            batch = [self._waiting.popleft() for _ in range(size)]
                    try:
                        serve([t.item for t in batch])
                    except BaseException as e:
                        for t in batch:
                            t.error = e
                    finally:
                        for t in batch:
                            t.served = True
            finally:
                self._lock.release()
        finally:
            with self._guard:  # interrupted while queued: not served, not waiting
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                if self._reserved is not None and ticket in self._reserved:
                    self._reserved.remove(ticket)  # the rest is served without it
                    self._reserved = self._reserved or None
        if ticket.error is not None:
            raise ticket.error
