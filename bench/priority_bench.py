"""How close the scheduler's priorities come to the shortest possible run, by what it knows.

The real ``schedule()`` runs random graphs in simulated time: ``submit`` books the node's
finish at now + its true duration, and the completions queue hands finishes back in time
order, moving the clock (a discrete-event simulation; no sleeping, no threads). The
yardstick is each graph's lower bound, LB = max(heaviest chain of true durations, total
work / slots): no schedule beats it, so makespan / LB is 1.0 at best.

True durations are lognormal (median 10 min, sigma 1: a session several times another is
common). What the scheduler is told, from least to most:

- scope, linear: the old costs 1..5 of a scope; the scope is a person's estimate, a noisy
  function of the true duration (log2 of it, off by a factor of two typically);
- scope: the same scopes at the geometric costs 1, 2, 4, 8, 16;
- learned, class: the history of one earlier run of as many other tasks (a repository's
  first run of these), read by ``learned_costs``: medians of (scope, risk) classes, of
  scopes;
- learned: a previous run of these very tasks, each duration off by a lognormal factor
  (sigma 0.4), read by ``learned_costs`` from the history files a run commits;
- oracle: the true durations.

Risk is drawn independently of duration: a class is no better than its scope here.
"""

from __future__ import annotations

import heapq
import math
import queue
import random
import statistics
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import Result, table
from tasks_lib.graph.dag import TaskGraph
from tasks_lib.graph.taskfile import Risk, Scope, Task
from tasks_lib.run.durations import history_path, learned_costs, run_history
from tasks_lib.run.records import Attempt, NodeRecord, NodeStatus, RunRecord
from tasks_lib.run.scheduler import schedule

NODES = 60
GRAPHS = 150  # per family; the p90 of all 600 moves by about 0.01 between seeds (12-14)
SLOTS = (4, 8)
MEDIAN_S = 600.0
SIGMA = 1.0
LEARNED_NOISE = 0.4
SCOPE_NOISE = 1.0  # standard deviation of the estimate, in scopes (a factor of 2 each)
RISKS = (Risk.LOW, Risk.MEDIUM, Risk.HIGH)
LINEAR = {s: n + 1 for n, s in enumerate(Scope)}
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def chains(rng: random.Random) -> list[list[int]]:
    """Independent chains of random lengths: the longest chain must start first."""
    cuts = sorted(rng.sample(range(1, NODES), rng.randint(5, 9)))
    deps: list[list[int]] = []
    for start, end in zip([0, *cuts], [*cuts, NODES], strict=True):
        deps += [[i - 1] if i > start else [] for i in range(start, end)]
    return deps


def wide(rng: random.Random) -> list[list[int]]:
    """No dependencies: plain list scheduling, longest first is the known good rule."""
    return [[] for _ in range(NODES)]


def layered(rng: random.Random) -> list[list[int]]:
    """Five layers; each task depends on 1-3 tasks of the layer before."""
    size = NODES // 5
    return [
        sorted(rng.sample(range(i // size * size - size, i // size * size), rng.randint(1, 3)))
        if i >= size
        else []
        for i in range(NODES)
    ]


def fan_in(rng: random.Random) -> list[list[int]]:
    """Each task depends on 0-3 random earlier tasks."""
    return [sorted(rng.sample(range(i), min(i, rng.randint(0, 3)))) for i in range(NODES)]


FAMILIES: dict[str, Callable[[random.Random], list[list[int]]]] = {
    "chains": chains,
    "wide": wide,
    "layered": layered,
    "fan-in": fan_in,
}


def estimated_scope(rng: random.Random, seconds: float, median: float = MEDIAN_S) -> Scope:
    """A person's scope for work of ``seconds``: log2 of it around moderate (work of the
    ``median`` length), plus noise."""
    index = round(2 + math.log2(seconds / median) + rng.gauss(0, SCOPE_NOISE))
    return list(Scope)[min(4, max(0, index))]


def make_tasks(
    rng: random.Random, deps: list[list[int]], prefix: str
) -> tuple[list[Task], dict[str, int]]:
    """Tasks with shuffled ids (so the id tie-break says nothing) and their true durations."""
    labels = [f"{prefix}{n:02d}" for n in rng.sample(range(len(deps)), len(deps))]
    true = {label: max(1, round(rng.lognormvariate(0, SIGMA) * MEDIAN_S)) for label in labels}
    tasks = [
        Task(
            id=label,
            name=label,
            depends_on=tuple(labels[d] for d in needs),
            scope=estimated_scope(rng, true[label]),
            risk=rng.choice(RISKS),
            path=Path(f"{label}.md"),
        )
        for label, needs in zip(labels, deps, strict=True)
    ]
    return tasks, true


def learned(
    folder: Path, earlier: dict[str, int], earlier_tasks: list[Task], tasks: list[Task]
) -> dict[str, int]:
    """The costs a run would weigh ``tasks`` by after a run of ``earlier_tasks`` that took
    ``earlier``: through the history file a run commits and ``learned_costs``."""
    record = RunRecord(
        run_name="earlier",
        origin="bench",
        base="main",
        started_at=EPOCH,
        finished_at=EPOCH,
        max_parallel=1,
        nodes=[
            NodeRecord(
                task_id=i,
                status=NodeStatus.COMPLETED,
                attempts=[Attempt(number=1, status=NodeStatus.COMPLETED)],
                agent_seconds=seconds,
            )
            for i, seconds in earlier.items()
        ],
    )
    path = Path(history_path(str(folder / "earlier.md")))
    path.write_text(run_history(record, {t.id: t for t in earlier_tasks}).model_dump_json())
    return learned_costs(folder, tasks).costs


class SimulatedSlots(queue.Queue[NodeRecord]):
    """``submit`` and ``completions`` for ``schedule()`` in simulated time: a node finishes
    its true duration after it was submitted; ``get`` returns the earliest finish (ties by
    id) and moves the clock there. ``schedule()`` submits all it can before each ``get``,
    so the order it sees is the order a real run with these durations would."""

    def __init__(self, durations: dict[str, int]) -> None:
        super().__init__()
        self.durations = durations
        self.now = 0
        self.finishes: list[tuple[int, str]] = []

    def submit(self, task_id: str, upstream: list[str]) -> None:
        heapq.heappush(self.finishes, (self.now + self.durations[task_id], task_id))

    def get(self, block: bool = True, timeout: float | None = None) -> NodeRecord:
        self.now, task_id = heapq.heappop(self.finishes)
        return NodeRecord(task_id=task_id, status=NodeStatus.COMPLETED)


def makespan(graph: TaskGraph, durations: dict[str, int], slots: int) -> int:
    sim = SimulatedSlots(durations)
    schedule(graph, max_parallel=slots, submit=sim.submit, completions=sim)
    return sim.now


def lower_bound(graph: TaskGraph, durations: dict[str, int], slots: int) -> float:
    chain = graph.with_costs(durations).critical_path(include_completed=True)[1]
    return max(chain, sum(durations.values()) / slots)


LEVELS = ("scope, linear", "scope", "learned, class", "learned", "oracle")


def ratios(seed: int = 12) -> dict[tuple[str, int, str], list[float]]:
    """makespan / LB per (family, slots, information level), one per graph."""
    rng = random.Random(seed)
    found: dict[tuple[str, int, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tgflow-priority-bench-") as tmp:
        for family, shape in FAMILIES.items():
            for n in range(GRAPHS):
                tasks, true = make_tasks(rng, shape(rng), "t")
                others, other_true = make_tasks(rng, shape(rng), "other-")
                again = {
                    i: max(1, round(s * rng.lognormvariate(0, LEARNED_NOISE)))
                    for i, s in true.items()
                }
                scoped = TaskGraph(tasks)
                own_dir = Path(tmp) / f"{family}-{n}-own"
                class_dir = Path(tmp) / f"{family}-{n}-class"
                own_dir.mkdir()
                class_dir.mkdir()
                weighed = {
                    "scope, linear": scoped.with_costs(
                        {t.id: LINEAR[t.scope or Scope.MODERATE] for t in tasks}
                    ),
                    "scope": scoped,
                    "learned, class": scoped.with_costs(
                        learned(class_dir, other_true, others, tasks)
                    ),
                    "learned": scoped.with_costs(learned(own_dir, again, tasks, tasks)),
                    "oracle": scoped.with_costs(true),
                }
                for slots in SLOTS:
                    bound = lower_bound(scoped, true, slots)
                    for level, graph in weighed.items():
                        ratio = makespan(graph, true, slots) / bound
                        found.setdefault((family, slots, level), []).append(ratio)
    return found


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def main() -> list[Result]:
    found = ratios()
    results: list[Result] = []
    for slots in SLOTS:
        for level in LEVELS:
            pooled = [r for f in FAMILIES for r in found[f, slots, level]]
            results.append(
                Result(
                    "priority",
                    f"all families, {slots} slots, {level}: makespan / LB p90",
                    f"{p90(pooled):.3f}",
                )
            )
    for family in FAMILIES:
        for slots in SLOTS:
            for level in LEVELS:
                values = found[family, slots, level]
                results.append(
                    Result(
                        "priority",
                        f"{family}, {slots} slots, {level}: makespan / LB p50, p90, max",
                        f"{statistics.median(values):.3f}, {p90(values):.3f}, {max(values):.3f}",
                    )
                )
    return results


if __name__ == "__main__":
    print(table(main()))
