"""The heap scheduler starts, skips and records exactly what the rescanning one did.

``rescanning_schedule`` is the scheduler as it was before in-degree counters and a heap (it
rescanned every pending node after each completion): kept here as the reference the new one
must match, start for start and record for record, on random graphs driven by a simulated
clock (no threads, so every run is reproducible).
"""

from __future__ import annotations

import heapq
import queue
import random
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks_lib.graph.dag import STARTABLE, TaskGraph
from tasks_lib.graph.taskfile import Scope, Status, Task
from tasks_lib.run.records import NodeRecord, NodeStatus
from tasks_lib.run.scheduler import ScheduleResult, Submit, schedule

Scheduler = Callable[..., ScheduleResult]


def _not_run(task_id: str, name: str, status: NodeStatus, reason: str) -> NodeRecord:
    now = datetime.now(UTC)
    return NodeRecord(
        task_id=task_id, name=name, status=status, reason=reason, started_at=now, finished_at=now
    )


def rescanning_schedule(
    graph: TaskGraph,
    *,
    max_parallel: int,
    submit: Submit,
    completions: queue.Queue[NodeRecord],
    only: Collection[str] = (),
    on_record: Callable[[NodeRecord], None] = lambda record: None,
) -> ScheduleResult:
    """The reference: the previous ``schedule``, unchanged."""
    selected = set(only) if only else {*graph.tasks, *graph.held_back}
    unknown = sorted(selected - set(graph.tasks) - set(graph.held_back))
    if unknown:
        raise ValueError(f"unknown task id(s) in only: {', '.join(unknown)}")
    result = ScheduleResult()
    for held in graph.held_back.values():
        if held.task_id in selected:
            status = NodeStatus.SKIPPED if held.upstream else NodeStatus.FAILED
            reason = held.reason if held.upstream else f"{held.reason}; fix the task file"
            result.records[held.task_id] = _not_run(held.task_id, held.name, status, reason)
    done: set[str] = {i for i, t in graph.tasks.items() if t.status is Status.COMPLETED}
    running: set[str] = set()
    pending = [i for i in graph.order if i in selected]

    def finish(record: NodeRecord) -> None:
        result.records[record.task_id] = record
        on_record(record)
        if record.status is NodeStatus.COMPLETED:
            done.add(record.task_id)
            return
        why = f"upstream {record.task_id} {record.status.value}"
        if record.reason:
            why += f": {record.reason}"
        for d in [i for i in pending if i in graph.descendants(record.task_id)]:
            pending.remove(d)
            skipped = _not_run(d, graph.tasks[d].name, NodeStatus.SKIPPED, why)
            result.records[d] = skipped
            on_record(skipped)

    for task_id in list(pending):
        if task_id not in pending:
            continue
        task = graph.tasks[task_id]
        missing = [d for d in graph.dependencies(task_id) if d not in selected and d not in done]
        reason = ""
        if task.status is Status.BLOCKED:
            notes = (task.section("Notes") or "no reason in its Notes").strip()
            status = NodeStatus.BLOCKED
            reason = f"blocked on the base branch: {notes} (answer it, then set status: pending)"
        elif task.status is not Status.COMPLETED and task.status not in STARTABLE:
            status = NodeStatus.SKIPPED
            reason = (
                f"status is {task.status.value} on the base branch (someone else's work in "
                "progress); set status: pending to run it here"
            )
        elif missing:
            status = NodeStatus.SKIPPED
            listed = ", ".join(f"{d} ({graph.tasks[d].status.value})" for d in missing)
            reason = f"depends on {listed}, not completed and not in this run"
        if reason:
            pending.remove(task_id)
            finish(_not_run(task_id, task.name, status, reason))

    while pending or running:
        ready = [i for i in pending if all(d in done for d in graph.dependencies(i))]
        ready.sort(key=lambda i: (-graph.priority(i), i))
        for task_id in ready[: max_parallel - len(running)]:
            pending.remove(task_id)
            running.add(task_id)
            result.submitted.append(task_id)
            upstream = [d for d in graph.dependencies(task_id) if d in result.submitted]
            submit(task_id, upstream)
        result.peak_running = max(result.peak_running, len(running))
        if not running:
            raise RuntimeError(f"nothing can start but {', '.join(pending)} wait (a bug)")
        record = completions.get()
        if record.task_id not in running:
            raise RuntimeError(f"completion for {record.task_id}, which is not running")
        running.remove(record.task_id)
        finish(record)
    return result


class SimulatedClock(queue.Queue[NodeRecord]):
    """``submit`` starts a node for a random duration; ``get`` hands back the one that ends
    first (ties by start order), with the outcome drawn for it: a run's completions, in an
    order a seed fixes."""

    def __init__(self, rng: random.Random, fail: Collection[str] = (), p_fail: float = 0.0):
        super().__init__()
        self.rng = rng
        self.fail = set(fail)
        self.p_fail = p_fail
        self.now = 0.0
        self.started = 0
        self.events: list[tuple[float, int, str]] = []
        self.calls: list[tuple[str, list[str]]] = []

    def submit(self, task_id: str, upstream: list[str]) -> None:
        self.calls.append((task_id, upstream))
        self.started += 1
        ends = self.now + self.rng.choice([1.0, 2.0, 3.0, self.rng.random() * 5])
        heapq.heappush(self.events, (ends, self.started, task_id))

    def get(self, block: bool = True, timeout: float | None = None) -> NodeRecord:
        self.now, _, task_id = heapq.heappop(self.events)
        failed = task_id in self.fail or self.rng.random() < self.p_fail
        status = NodeStatus.FAILED if failed else NodeStatus.COMPLETED
        return NodeRecord(task_id=task_id, status=status, reason="boom" if failed else "")


def random_graph(rng: random.Random, n: int, *, statuses: bool = True) -> TaskGraph:
    """Up to 3 dependencies per task, random scopes (so priorities vary and tie), and some
    tasks completed, blocked or in progress on the base branch."""
    odd = [Status.COMPLETED, Status.BLOCKED, Status.IN_PROGRESS, Status.FAILED]
    tasks = []
    for i in range(n):
        deps = rng.sample(range(i), min(i, rng.randint(0, 3)))
        status = rng.choice(odd) if statuses and rng.random() < 0.15 else Status.PENDING
        tasks.append(
            Task(
                id=f"t{i:04d}",
                name=f"Task {i}",
                depends_on=tuple(f"t{d:04d}" for d in deps),
                status=status,
                scope=rng.choice([*Scope, None]),
                path=Path(f"t{i}.md"),
            )
        )
    rng.shuffle(tasks)
    return TaskGraph(tasks)


def run(
    scheduler: Scheduler,
    graph: TaskGraph,
    seed: int,
    *,
    max_parallel: int,
    only: Collection[str] = (),
    fail: Collection[str] = (),
    p_fail: float = 0.0,
) -> tuple[ScheduleResult, SimulatedClock, list[str]]:
    clock = SimulatedClock(random.Random(seed), fail, p_fail)
    seen: list[str] = []
    result = scheduler(
        graph,
        max_parallel=max_parallel,
        submit=clock.submit,
        completions=clock,
        only=only,
        on_record=lambda r: seen.append(r.task_id),
    )
    return result, clock, seen


def outcome(result: ScheduleResult) -> list[tuple[str, str, NodeStatus, str]]:
    return [(i, r.name, r.status, r.reason) for i, r in result.records.items()]


@pytest.mark.parametrize("seed", range(40))
def test_same_starts_records_and_upstreams_as_the_rescanning_scheduler(seed: int) -> None:
    rng = random.Random(seed)
    g = random_graph(rng, rng.randint(1, 150))
    only = rng.sample(sorted(g.tasks), len(g) // 2) if seed % 4 == 0 else []
    slots, p_fail = rng.choice([1, 2, 4, 8]), rng.choice([0.0, 0.05, 0.2])
    new, new_clock, new_seen = run(schedule, g, seed, max_parallel=slots, only=only, p_fail=p_fail)
    old, old_clock, old_seen = run(
        rescanning_schedule, g, seed, max_parallel=slots, only=only, p_fail=p_fail
    )
    assert new.submitted == old.submitted
    assert new_clock.calls == old_clock.calls  # the same upstreams handed to submit
    assert outcome(new) == outcome(old)  # the same records, reasons, in the same order
    assert new_seen == old_seen and new.peak_running == old.peak_running


def test_a_big_graph_starts_in_the_same_order() -> None:
    g = random_graph(random.Random(1000), 1500, statuses=False)
    new, new_clock, _ = run(schedule, g, 7, max_parallel=8, p_fail=0.01)
    old, old_clock, _ = run(rescanning_schedule, g, 7, max_parallel=8, p_fail=0.01)
    assert len(new.submitted) > 100  # failures skip some, most still run
    assert new.submitted == old.submitted and new_clock.calls == old_clock.calls
    assert outcome(new) == outcome(old)


def test_a_completed_on_base_node_that_fails_skips_dependents_already_ready() -> None:
    """Its dependents count it done from the start, so one may be ready (queued) before it
    reports: the failure still takes that one out."""
    tasks = [
        Task(id="base", name="BASE", status=Status.COMPLETED, path=Path("base.md")),
        Task(id="long", name="LONG", path=Path("long.md")),
        Task(id="after", name="AFTER", depends_on=("base",), path=Path("after.md")),
    ]
    g = TaskGraph(tasks)
    new, clock, _ = run(schedule, g, 0, max_parallel=1, fail=["base"])
    old, _, _ = run(rescanning_schedule, g, 0, max_parallel=1, fail=["base"])
    assert outcome(new) == outcome(old)
    assert new.records["after"].reason == "upstream base failed: boom"
    assert [c[0] for c in clock.calls] == ["base", "long"]  # after waited in the heap


def test_a_failure_skips_all_its_descendants_and_the_rest_runs() -> None:
    g = random_graph(random.Random(5), 2000, statuses=False)
    first = g.order[0]
    below = g.descendants(first)
    result, clock, _ = run(schedule, g, 3, max_parallel=4, fail=[first])
    assert result.records[first].status is NodeStatus.FAILED
    for task_id, record in result.records.items():
        if task_id in below:
            assert record.status is NodeStatus.SKIPPED
            assert record.reason == f"upstream {first} failed: boom"
        elif task_id != first:
            assert record.status is NodeStatus.COMPLETED
    assert len(result.records) == len(g)
    assert {c[0] for c in clock.calls} == set(g.tasks) - below


def test_failures_walk_the_graph_once_between_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's dependents are listed at most twice in all (when it completes, and in the
    walk of one failure above it), however many failures there are: the cost that made a
    first-node failure of 5,000 nodes take 20 s is gone. Counted, not timed."""
    g = random_graph(random.Random(9), 1000, statuses=False)
    calls = 0
    dependents = g.dependents

    def counted(task_id: str) -> list[str]:
        nonlocal calls
        calls += 1
        return dependents(task_id)

    monkeypatch.setattr(g, "dependents", counted)
    roots = [i for i in g.order if not g.dependencies(i)]
    result, _, _ = run(schedule, g, 1, max_parallel=8, fail=roots)
    assert all(r.status is not NodeStatus.COMPLETED for r in result.records.values())
    assert calls <= 2 * len(g)
