"""A free slot goes to the most critical ready task that touches no file a running one declares,
and never stays free only because every ready task does."""

from __future__ import annotations

import queue
import random
from pathlib import Path

import pytest

from tasks_lib.graph.dag import TaskGraph
from tasks_lib.graph.taskfile import Scope, Task
from tasks_lib.run.records import NodeRecord, NodeStatus
from tasks_lib.run.scheduler import ScheduleResult, overlap, schedule


class FirstInFirstOut(queue.Queue[NodeRecord]):
    """Nodes end in the order they started: which node ends next never depends on timing."""

    def __init__(self) -> None:
        super().__init__()
        self.running: list[str] = []
        self.calls: list[tuple[str, list[str]]] = []

    def submit(self, task_id: str, upstream: list[str]) -> None:
        self.calls.append((task_id, upstream))
        self.running.append(task_id)

    def get(self, block: bool = True, timeout: float | None = None) -> NodeRecord:
        return NodeRecord(task_id=self.running.pop(0), status=NodeStatus.COMPLETED)


def task(task_id: str, scope: Scope, references: str = "", **fields: object) -> Task:
    body = f"## References\n\n{references}\n" if references else ""
    return Task.model_validate(
        {"id": task_id, "name": task_id.upper(), "scope": scope, "path": Path(f"{task_id}.md")}
        | {"body": body}
        | fields
    )


def run(tasks: list[Task], slots: int) -> tuple[ScheduleResult, FirstInFirstOut]:
    clock = FirstInFirstOut()
    result = schedule(TaskGraph(tasks), max_parallel=slots, submit=clock.submit, completions=clock)
    assert all(r.status is NodeStatus.COMPLETED for r in result.records.values())
    return result, clock


def test_the_task_touching_a_running_tasks_file_waits_for_a_disjoint_one() -> None:
    a = task("a", Scope.SYSTEM, "- `src/a.py`")
    b = task("b", Scope.BROAD, "- src/a.py:10-12 (the same function)")
    c = task("c", Scope.SINGLE, files=["src/c.py"])
    result, _ = run([a, b, c], slots=2)
    assert result.submitted == ["a", "c", "b"]  # b is more critical than c, but edits a's file


def test_a_folder_prefix_overlaps_the_files_below_it() -> None:
    a = task("a", Scope.SYSTEM, files=["src/"])
    b = task("b", Scope.BROAD, "- src/deep/b.py")
    c = task("c", Scope.NARROW, "- srcs/c.py")  # same leading letters, another folder
    d = task("d", Scope.SINGLE)
    result, _ = run([a, b, c, d], slots=3)
    assert result.submitted[:3] == ["a", "c", "d"]


def test_when_every_ready_task_overlaps_the_most_critical_one_still_starts() -> None:
    a = task("a", Scope.SYSTEM, files=["src/a.py"])
    b = task("b", Scope.NARROW, files=["src/a.py"])
    c = task("c", Scope.BROAD, files=["src/"])
    result, _ = run([a, b, c], slots=3)
    assert result.submitted == ["a", "c", "b"] and result.peak_running == 3


def test_a_skipped_task_keeps_its_place_for_the_next_free_slot() -> None:
    """b waits while a runs; when a ends, b (still the most critical) is next, before d."""
    a = task("a", Scope.SYSTEM, files=["src/a.py"])
    b = task("b", Scope.BROAD, files=["src/a.py"])
    c = task("c", Scope.MODERATE, files=["src/c.py"])
    d = task("d", Scope.SINGLE, files=["src/d.py"])
    result, _ = run([a, b, c, d], slots=2)
    assert result.submitted == ["a", "c", "b", "d"]


def test_without_declared_files_the_order_is_priority_then_id() -> None:
    tasks = [
        task("e", Scope.SINGLE),
        task("b", Scope.SYSTEM, "- the design notes, nothing path-like"),
        task("a", Scope.SINGLE),
        task("d", Scope.MODERATE),
        task("c", Scope.MODERATE),
    ]
    result, _ = run(tasks, slots=2)
    assert result.submitted == ["b", "c", "d", "a", "e"]
    assert result.submitted == TaskGraph(tasks).ready()


class Checked(FirstInFirstOut):
    """Checks every start against the rule, knowing the graph: the node started is the first
    ready one (priority, then id) that overlaps no running node, or the first ready one when
    all do; and a completion is awaited only with every slot busy or nothing ready."""

    def __init__(self, graph: TaskGraph, slots: int) -> None:
        super().__init__()
        self.graph, self.slots = graph, slots
        self.done: set[str] = set()
        self.started: set[str] = set()
        self.passed_over = 0

    def ready(self) -> list[str]:
        free = [
            i
            for i in self.graph.tasks
            if i not in self.started and set(self.graph.dependencies(i)) <= self.done
        ]
        return sorted(free, key=lambda i: (-self.graph.priority(i), i))

    def submit(self, task_id: str, upstream: list[str]) -> None:
        ready = self.ready()
        files = {i: self.graph.tasks[i].declared_files for i in ready + self.running}
        clear = [i for i in ready if not any(overlap(files[i], files[r]) for r in self.running)]
        assert task_id == (clear or ready)[0]
        self.passed_over += task_id != ready[0]
        self.started.add(task_id)
        super().submit(task_id, upstream)

    def get(self, block: bool = True, timeout: float | None = None) -> NodeRecord:
        assert len(self.running) == self.slots or not self.ready()  # no slot left idle
        record = super().get()
        self.done.add(record.task_id)
        return record


@pytest.mark.parametrize("seed", range(20))
def test_random_graphs_follow_the_rule_at_every_start(seed: int) -> None:
    rng = random.Random(seed)
    pool = ["src/", "src/a.py", "src/b.py", "lib/c.py", "lib/", "docs/d.md"]
    tasks = [
        task(
            f"t{i:03d}",
            rng.choice(list(Scope)),
            "\n".join(f"- `{p}`" for p in rng.sample(pool, rng.randint(0, 2))),
            depends_on=[f"t{d:03d}" for d in rng.sample(range(i), min(i, rng.randint(0, 2)))],
        )
        for i in range(rng.randint(5, 60))
    ]
    graph, slots = TaskGraph(tasks), rng.choice([2, 3, 4, 8])
    clock = Checked(graph, slots)
    result = schedule(graph, max_parallel=slots, submit=clock.submit, completions=clock)
    assert sorted(result.submitted) == sorted(graph.tasks)
    assert all(r.status is NodeStatus.COMPLETED for r in result.records.values())
    assert clock.passed_over > 0  # the rule changed the order here: the check is not idle
