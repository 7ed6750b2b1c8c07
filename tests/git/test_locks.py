"""The merge lock is fair: served in the order nodes arrive, a resolved conflict round first."""

from __future__ import annotations

import threading
import time

import pytest

from tasks_lib.git.locks import FairLock, merge_lock_for


def wait_until(condition: object, timeout_s: float = 10.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def queue_up(lock: FairLock, names: list[str], served: list[str], priority: set[str]) -> None:
    """Each name's thread arrives only once the one before it is queued."""
    for name in names:
        before = lock.waiting

        def take(name: str = name) -> None:
            with lock.priority() if name in priority else lock:
                served.append(name)

        threading.Thread(target=take, daemon=True).start()
        wait_until(lambda before=before: lock.waiting == before + 1)


def test_threads_are_served_in_the_order_they_arrived() -> None:
    lock, served = FairLock(), list[str]()
    names = [f"t{i}" for i in range(12)]
    with lock:
        queue_up(lock, names, served, priority=set())
    wait_until(lambda: len(served) == len(names))
    assert served == names


def test_a_resolved_conflict_round_goes_ahead_of_plain_waiters_in_its_own_order() -> None:
    lock, served = FairLock(), list[str]()
    with lock:
        queue_up(lock, ["a", "b", "r1", "c", "r2"], served, priority={"r1", "r2"})
    wait_until(lambda: len(served) == 5)
    assert served == ["r1", "r2", "a", "b", "c"]


def test_only_one_holder_at_a_time_under_contention() -> None:
    lock, inside, most = FairLock(), [0], [0]

    def work() -> None:
        for _ in range(50):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == [1] and lock.waiting == 0


def test_taking_it_twice_in_one_thread_is_an_error_not_a_deadlock() -> None:
    lock = FairLock()
    with lock, pytest.raises(RuntimeError, match="already holds"):
        lock.acquire()
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()
    with lock:  # still usable
        pass


def test_a_holder_that_raises_releases_it() -> None:
    lock = FairLock()
    with pytest.raises(ValueError), lock:
        raise ValueError("boom")
    done = threading.Event()

    def take() -> None:
        with lock:
            done.set()

    threading.Thread(target=take).start()
    assert done.wait(5)


def test_one_fair_lock_per_origin() -> None:
    lock = merge_lock_for("/some/where/origin.git")
    assert isinstance(lock, FairLock)
    assert merge_lock_for("/some/where/origin.git/") is lock
    assert merge_lock_for("/some/where/else.git") is not lock


def test_a_lock_across_processes_is_held_exactly_while_the_local_one_is() -> None:
    from contextlib import contextmanager

    lock, events = FairLock(), []

    @contextmanager
    def shared():
        events.append("across taken")
        yield
        events.append("across given back")

    lock.across_processes(shared)
    with lock:
        events.append("merging")
    lock.across_processes(None)
    with lock:
        events.append("merging alone")

    assert events == ["across taken", "merging", "across given back", "merging alone"]
