"""What ``schedule()`` itself costs per node, and what a failure of the first node costs.

Nodes finish the moment they start (8 slots, first started first finished), so all the time
is the scheduler's. The yardstick, timed alternately with it on the same graph, is a bare
loop doing the traffic any scheduler needs: each node's dependencies listed, one submit, one
completion through the queue, in topological order. A linear scheduler stays a constant
multiple of it as the graph grows; a quadratic one drifts up with n.
"""

from __future__ import annotations

import queue
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench import Result, table
from tasks_lib.graph.dag import TaskGraph
from tasks_lib.graph.taskfile import Scope, Task
from tasks_lib.run.records import NodeRecord, NodeStatus
from tasks_lib.run.scheduler import schedule

SIZES = (200, 1000, 5000)
SLOTS = 8
PER_NODE_TARGET_MS = 0.05
FAILURE_TARGET_S = 0.5


def make_graph(n: int, seed: int = 7) -> TaskGraph:
    """1-3 dependencies per task among all earlier ones, random scopes (priorities tie)."""
    rng = random.Random(seed)
    return TaskGraph(
        [
            Task(
                id=f"t{i}",
                name=f"Task {i}",
                depends_on=tuple(f"t{d}" for d in rng.sample(range(i), min(i, rng.randint(1, 3)))),
                scope=rng.choice(list(Scope)),
                path=Path(f"t{i}.md"),
            )
            for i in range(n)
        ]
    )


def records(graph: TaskGraph, failed: str | None = None) -> dict[str, NodeRecord]:
    """Made before the clock starts, so neither side pays for building them."""
    return {
        i: NodeRecord(task_id=i, status=NodeStatus.FAILED if i == failed else NodeStatus.COMPLETED)
        for i in graph.order
    }


def run_schedule(graph: TaskGraph, made: dict[str, NodeRecord]) -> None:
    completions: queue.Queue[NodeRecord] = queue.Queue()
    schedule(
        graph,
        max_parallel=SLOTS,
        submit=lambda task_id, upstream: completions.put(made[task_id]),
        completions=completions,
    )


def bare_loop(graph: TaskGraph, made: dict[str, NodeRecord]) -> None:
    completions: queue.Queue[NodeRecord] = queue.Queue()
    for task_id in graph.order:
        graph.dependencies(task_id)
        completions.put(made[task_id])
        completions.get()


def paired(a: Callable[[], None], b: Callable[[], None], repeat: int) -> tuple[float, float]:
    """Median seconds of each, timed alternately so both see the same machine load."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, into in ((a, times[0]), (b, times[1])):
            started = time.process_time()
            fn()
            into.append(time.process_time() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> list[Result]:
    results: list[Result] = []
    for n in SIZES:
        graph = make_graph(n)
        made = records(graph)
        mine, yardstick = paired(
            partial(run_schedule, graph, made), partial(bare_loop, graph, made), repeat=5
        )
        per_node = mine / n * 1000
        verdict = "met" if per_node <= PER_NODE_TARGET_MS else "MISSED"
        results.append(
            Result(
                "schedule",
                f"{n} nodes: CPU per node (target ≤ {PER_NODE_TARGET_MS} ms; bare loop "
                f"{yardstick / n * 1000:.4f} ms)",
                f"{per_node:.4f} ms = {mine / yardstick:.1f} × bare loop, {verdict}",
            )
        )
    graph = make_graph(SIZES[-1])
    first = graph.order[0]
    failing, made = records(graph, first), records(graph)
    mine, yardstick = paired(
        partial(run_schedule, graph, failing), partial(bare_loop, graph, made), repeat=3
    )
    skipped = len(graph.descendants(first))
    verdict = "met" if mine < FAILURE_TARGET_S else "MISSED"
    results.append(
        Result(
            "schedule",
            f"{SIZES[-1]} nodes, the first fails ({skipped} skipped): CPU (target < "
            f"{FAILURE_TARGET_S} s; bare loop {yardstick * 1000:.1f} ms)",
            f"{mine * 1000:.1f} ms = {mine / yardstick:.1f} × bare loop, {verdict}",
        )
    )
    return results


if __name__ == "__main__":
    print(table(main()))
