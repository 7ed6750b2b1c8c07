"""Ready-first scheduling, driven by threads standing in for agent sessions."""

from __future__ import annotations

import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks_lib.graph.dag import HeldBack, TaskGraph
from tasks_lib.graph.taskfile import Status, Task
from tasks_lib.run.records import NodeRecord, NodeStatus
from tasks_lib.run.scheduler import schedule


def graph(*specs: tuple[str, list[str]], **statuses: Status) -> TaskGraph:
    return TaskGraph(
        [
            Task(
                id=i,
                name=i.upper(),
                depends_on=tuple(d),
                status=statuses.get(i, Status.PENDING),
                path=Path(f"{i}.md"),
            )
            for i, d in specs
        ]
    )


class ThreadRunner:
    """submit() starts a thread that sleeps, then reports the outcome given for that id."""

    def __init__(self, seconds: dict[str, float], outcome: dict[str, NodeStatus] | None = None):
        self.seconds = seconds
        self.outcome = outcome or {}
        self.completions: queue.Queue[NodeRecord] = queue.Queue()
        self.calls: list[tuple[str, list[str]]] = []
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()

    def submit(self, task_id: str, upstream: list[str]) -> None:
        self.calls.append((task_id, upstream))
        threading.Thread(target=self._run, args=(task_id,)).start()

    def _run(self, task_id: str) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.seconds.get(task_id, 0.0))
        with self.lock:
            self.running -= 1
        status = self.outcome.get(task_id, NodeStatus.COMPLETED)
        self.completions.put(
            NodeRecord(
                task_id=task_id,
                status=status,
                reason="boom" if status != "completed" else "",
                finished_at=datetime.now(UTC),
            )
        )


SIX = [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", []), ("e", []), ("f", [])]


@pytest.mark.serial
def test_six_node_case_finishes_in_two_slots_of_time_not_three() -> None:
    runner = ThreadRunner({"a": 0.3, "d": 0.3, "e": 0.3, "f": 0.3})
    start = time.monotonic()
    result = schedule(
        graph(*SIX), max_parallel=2, submit=runner.submit, completions=runner.completions
    )
    makespan = time.monotonic() - start
    assert all(r.status is NodeStatus.COMPLETED for r in result.records.values())
    assert len(result.records) == 6
    assert makespan < 0.75, makespan  # ready-first: 0.6 s; holding slots for b, c: 0.9 s
    assert runner.peak <= 2 and result.peak_running == 2
    assert result.submitted[0] == "a"  # the longest path starts first
    assert dict(runner.calls)["b"] == ["a"]  # dependencies are handed over as upstream


def test_failed_node_skips_its_descendants_and_independent_work_goes_on() -> None:
    g = graph(("a", []), ("b", ["a"]), ("c", ["b"]), ("d", []))
    runner = ThreadRunner({}, {"a": NodeStatus.FAILED})
    result = schedule(g, max_parallel=2, submit=runner.submit, completions=runner.completions)
    status = {i: r.status for i, r in result.records.items()}
    assert status == {
        "a": NodeStatus.FAILED,
        "b": NodeStatus.SKIPPED,
        "c": NodeStatus.SKIPPED,
        "d": NodeStatus.COMPLETED,
    }
    assert result.records["c"].reason == "upstream a failed: boom"
    assert sorted(i for i, _ in runner.calls) == ["a", "d"]


def test_never_more_than_max_parallel_and_highest_priority_first() -> None:
    specs = [(f"n{i}", []) for i in range(6)] + [("root", []), ("leaf", ["root"])]
    runner = ThreadRunner(dict.fromkeys([s[0] for s in specs], 0.05))
    result = schedule(
        graph(*specs), max_parallel=3, submit=runner.submit, completions=runner.completions
    )
    assert runner.peak <= 3
    assert result.submitted[0] == "root"
    assert len(result.records) == 8


def test_blocked_and_completed_on_main_and_only() -> None:
    g = graph(
        ("done", []),
        ("blocked", []),
        ("after-blocked", ["blocked"]),
        ("x", ["done"]),
        ("y", ["z"]),
        ("z", []),
        done=Status.COMPLETED,
        blocked=Status.BLOCKED,
    )
    runner = ThreadRunner({})
    result = schedule(
        g,
        max_parallel=2,
        submit=runner.submit,
        completions=runner.completions,
        only=["done", "blocked", "after-blocked", "x", "y"],
    )
    status = {i: r.status for i, r in result.records.items()}
    assert status["blocked"] is NodeStatus.BLOCKED
    assert "answer it" in result.records["blocked"].reason
    assert status["after-blocked"] is NodeStatus.SKIPPED
    assert status["y"] is NodeStatus.SKIPPED
    assert result.records["y"].reason == "depends on z (pending), not completed and not in this run"
    assert status["x"] is NodeStatus.COMPLETED and status["done"] is NodeStatus.COMPLETED
    assert sorted(i for i, _ in runner.calls) == ["done", "x"]  # done is shown, as already done
    assert "z" not in result.records


def test_unknown_only_id_is_an_error() -> None:
    runner = ThreadRunner({})
    with pytest.raises(ValueError, match="unknown task id"):
        schedule(
            graph(("a", [])),
            max_parallel=1,
            submit=runner.submit,
            completions=runner.completions,
            only=["nope"],
        )


def test_held_back_tasks_get_records_and_are_never_submitted() -> None:
    held = {
        "bad": HeldBack("bad", "BAD", "tasks/bad.md: invalid risk 'hgh'"),
        "after-bad": HeldBack("after-bad", "AFTER", "upstream bad held back: ...", "bad"),
    }
    tasks = graph(("a", []), ("b", ["a"]))
    runner = ThreadRunner({})
    seen: list[str] = []
    result = schedule(
        TaskGraph(list(tasks), held),
        max_parallel=2,
        submit=runner.submit,
        completions=runner.completions,
        on_record=lambda r: seen.append(r.task_id),
    )
    assert [c[0] for c in runner.calls] == ["a", "b"] and seen == ["a", "b"]
    bad, after = result.records["bad"], result.records["after-bad"]
    assert bad.status is NodeStatus.FAILED and bad.name == "BAD"
    assert bad.reason == "tasks/bad.md: invalid risk 'hgh'; fix the task file"
    assert after.status is NodeStatus.SKIPPED and after.reason == "upstream bad held back: ..."

    only = schedule(
        TaskGraph(list(tasks), held),
        max_parallel=1,
        submit=ThreadRunner({}).submit,
        completions=queue.Queue(),
        only=["bad"],
    )
    assert list(only.records) == ["bad"]  # only names a held-back task: its record, no node
