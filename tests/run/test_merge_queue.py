"""The merge queue's order and bisection, over plain items (the git side is in test_batch_merge)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

from tasks_lib.git.locks import FairLock
from tasks_lib.run.merge_queue import MergeQueue, Trial, land_batch


class Base:
    """A base branch whose build breaks when it holds a culprit; records every trial."""

    def __init__(self, culprits: set[str], conflicting: set[str] = frozenset()) -> None:
        self.culprits, self.conflicting = culprits, conflicting
        self.landed: list[str] = []
        self.trials: list[list[str]] = []

    def trial(self, items: Sequence[str]) -> Trial[str]:
        merged = [i for i in items if i not in self.conflicting]
        conflicted = [i for i in items if i in self.conflicting]
        self.trials.append(merged)
        if any(i in self.culprits for i in self.landed + merged):
            return Trial(False, merged, conflicted)
        self.landed += merged
        return Trial(True, merged, conflicted)


def test_a_green_batch_is_validated_once() -> None:
    base = Base(culprits=set())
    out = land_batch(["a", "b", "c", "d"], base.trial)
    assert out.landed == ["a", "b", "c", "d"] and out.trials == 1 and not out.culprits


def test_one_culprit_among_four_is_found_and_the_three_others_land() -> None:
    base = Base(culprits={"d"})
    out = land_batch(["a", "b", "c", "d"], base.trial)
    assert out.culprits == ["d"]
    assert out.landed == base.landed == ["a", "b", "c"]
    # abcd fails; ab passes, so ab+cd is the tree that failed: cd is split unrun; c passes,
    # so d on top of abc is that tree again: the culprit without another validation.
    assert base.trials == [["a", "b", "c", "d"], ["a", "b"], ["c"]]


def test_a_culprit_in_front_costs_more_trials_but_the_rest_still_lands() -> None:
    base = Base(culprits={"a"})
    out = land_batch(["a", "b", "c", "d"], base.trial)
    assert out.culprits == ["a"] and out.landed == ["b", "c", "d"]
    assert base.trials == [["a", "b", "c", "d"], ["a", "b"], ["a"], ["b"], ["c", "d"]]


def test_every_culprit_is_returned() -> None:
    base = Base(culprits={"b", "e"})
    out = land_batch(list("abcdef"), base.trial)
    assert sorted(out.culprits) == ["b", "e"] and out.landed == ["a", "c", "d", "f"]


def test_a_conflicting_branch_leaves_the_batch_and_the_known_failure_shortcut_is_not_taken() -> (
    None
):
    base = Base(culprits={"d"}, conflicting={"b"})
    out = land_batch(["a", "b", "c", "d"], base.trial)
    assert out.conflicted == ["b"] and out.culprits == ["d"] and out.landed == ["a", "c"]
    assert all("b" not in t for t in base.trials[1:])


def test_a_batch_of_one_that_fails_is_its_own_culprit() -> None:
    base = Base(culprits={"a"})
    out = land_batch(["a"], base.trial)
    assert out.culprits == ["a"] and out.trials == 1 and not out.landed


def test_the_lock_holder_serves_everyone_waiting_in_arrival_order() -> None:
    lock, served = FairLock(), []
    queue: MergeQueue[str] = MergeQueue(lock)
    lock.acquire()  # a merge in progress: the others queue behind it
    threads = [
        threading.Thread(target=queue.land, args=(name, 3, served.append)) for name in "abcd"
    ]
    for t in threads:
        t.start()
        while queue.waiting < threads.index(t) + 1:
            time.sleep(0.01)
    lock.release()
    for t in threads:
        t.join(10)
    assert served == [["a", "b", "c"], ["d"]]


def test_an_error_while_serving_reaches_every_item_of_the_batch() -> None:
    lock = FairLock()
    queue: MergeQueue[str] = MergeQueue(lock)
    errors: list[str] = []

    def serve(batch: list[str]) -> None:
        raise RuntimeError("git broke")

    def land(name: str) -> None:
        try:
            queue.land(name, 4, serve)
        except RuntimeError as e:
            errors.append(f"{name}: {e}")

    lock.acquire()
    threads = [threading.Thread(target=land, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    while queue.waiting < 2:
        time.sleep(0.01)
    lock.release()
    for t in threads:
        t.join(10)
    assert sorted(errors) == ["a: git broke", "b: git broke"] and queue.waiting == 0


def test_what_joins_while_a_batch_validates_is_reserved_and_served_next_as_it_was() -> None:
    """While a validates, the first to join (b) is reserved; c and d, joining once a batch
    is reserved, wait: the next batch served is exactly b, then c and d together."""
    lock, served, reserved = FairLock(), [], []
    queue: MergeQueue[str] = MergeQueue(lock)
    validating, go = threading.Event(), threading.Event()

    def serve(batch: list[str]) -> None:
        served.append(batch)
        if batch == ["a"]:

            def start() -> None:
                reserved.extend(queue.reserve(3, start))

            with queue.while_validating(start):
                validating.set()
                go.wait(10)

    def land(name: str) -> threading.Thread:
        t = threading.Thread(target=queue.land, args=(name, 3, serve))
        t.start()
        return t

    threads = [land("a")]
    validating.wait(10)
    threads.append(land("b"))  # joins while a validates: reserved at once
    while not reserved:
        time.sleep(0.01)
    threads += [land("c"), land("d")]  # a batch is reserved already: they wait
    while queue.waiting < 2:
        time.sleep(0.01)
    go.set()
    for t in threads:
        t.join(10)

    assert reserved == ["b"]
    assert served == [["a"], ["b"], ["c", "d"]]


def test_a_reserved_item_whose_wait_fails_is_not_served_without_it() -> None:
    """b is reserved while a validates, then its turn on the shared lock fails (another
    machine's lock refused): b is not served by anyone, c is."""
    lock, served, errors = FairLock(), [], []
    queue: MergeQueue[str] = MergeQueue(lock)
    validating, go = threading.Event(), threading.Event()

    @contextlib.contextmanager
    def across() -> Iterator[None]:
        if threading.current_thread().name == "b":
            raise RuntimeError("the shared lock refused b")
        yield

    lock.across_processes(across)

    def serve(batch: list[str]) -> None:
        served.append(batch)
        if batch == ["a"]:

            def start() -> None:
                queue.reserve(3, start)

            with queue.while_validating(start):
                validating.set()
                go.wait(10)

    def land(name: str) -> None:
        try:
            queue.land(name, 3, serve)
        except RuntimeError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=land, args=(n,), name=n) for n in "abc"]
    threads[0].start()
    validating.wait(10)
    for t in threads[1:]:
        t.start()
        time.sleep(0.2)  # b joins (and is reserved) before c
    go.set()
    for t in threads:
        t.join(10)

    assert errors == ["the shared lock refused b"]
    assert served == [["a"], ["c"]]
