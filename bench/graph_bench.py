"""How long tgflow takes to read, validate and plan a large task graph.

The graph is written as real task files (the cost users pay is parsing them), with ids
holding '/', 1-3 dependencies per task, and random scopes and statuses.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import Result, table
from tasks_lib.graph.dag import TaskGraph, load_graph
from tasks_lib.graph.taskfile import load_tasks

SCOPES = ["single", "narrow", "moderate", "broad", "system"]


def write_graph(folder: Path, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(n):
        deps = sorted(
            {f"area{j % 10}/t{j}" for j in rng.sample(range(i), min(i, rng.randint(1, 3)))}
        )
        deps_yaml = "".join(f"\n  - {d}" for d in deps) if deps else " []"
        status = "completed" if i < n // 4 else "pending"
        path = folder / f"area{i % 10}" / f"t{i}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"---\nid: area{i % 10}/t{i}\nname: Task {i}\nstatus: {status}\n"
            f"depends_on:{deps_yaml}\nscope: {rng.choice(SCOPES)}\nrisk: low\n"
            f"created: 2026-04-26T09:10:18.462977719Z\n---\n\n## Description\n\nDo {i}.\n"
        )


def median_seconds(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(n: int = 1000) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_graph(folder, n)
        tasks = load_tasks(folder).tasks

        def everything() -> None:
            graph, problems, _ = load_graph(folder)
            assert not problems, problems
            graph.plan()

        return [
            Result(
                "graph",
                f"{n} task files: load + validate + plan (median of 5)",
                f"{median_seconds(everything) * 1000:.0f} ms",
            ),
            Result(
                "graph",
                f"{n} task files: load and parse only",
                f"{median_seconds(lambda: load_tasks(folder)) * 1000:.0f} ms",
            ),
            Result(
                "graph",
                f"{n} tasks in memory: validate + build + plan",
                f"{median_seconds(lambda: TaskGraph(tasks).plan()) * 1000:.0f} ms",
            ),
        ]


if __name__ == "__main__":
    print(table(main()))
