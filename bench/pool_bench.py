"""One run's nodes on one machine against three (``node_pool``, issue 13): the same graph,
agents that take a fixed time, on a Prefect server on Postgres with 1 and then 3 workers that
share nothing (``bench.cluster``), each taking two node runs at once.

The yardstick is the ideal: with agents alone taking time, W workers of two sessions each
finish TASKS independent nodes in ceil(TASKS / 2W) waves of AGENT_S, so 3 workers are at
best 3 times as fast as one. What keeps a run from it: a node run's start (the worker's poll,
a Python process importing Prefect and tgflow, a clone the first time on each slot), its
validation and merge, and the merges waiting on each other across machines. The hand-off gap
is the time from one merge's end to the next one's start, from the node runs' own records
(the merge limit is handed over through the Prefect server).

Needs Postgres (``make tools``) and takes a few minutes.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Result, table
from bench.cluster import machines, node_record, node_runs, prefect_on_postgres
from deployments.definitions import tgflow_root
from flows.prefect_server import LocalPrefect

TASKS = 12
AGENT_S = 20.0
PER_WORKER = 2  # node runs a worker takes at once
WORKER_COUNTS = (1, 3)
POOL = "tgflow-bench-nodes"
TGFLOW = str(Path(sys.executable).parent / "tgflow")
ME = ["-c", "user.name=Bench", "-c", "user.email=bench@example.invalid"]


def make_origin(tmp: Path) -> Path:
    """TASKS independent tasks whose scripted agent writes a file, then sleeps AGENT_S."""
    seed, origin = tmp / "seed", tmp / "origin.git"
    (seed / "tasks").mkdir(parents=True)
    (seed / "README.md").write_text("bench\n")
    for n in range(TASKS):
        (seed / "tasks" / f"t{n}.md").write_text(
            f"---\nid: t{n}\nname: Task {n}\nstatus: pending\n---\n\n## Description\n\n"
            f'Do {n}.\n\n```tgflow-script\n- write: {{path: t{n}.txt, content: "{n}\\n"}}\n'
            f"- sleep: {AGENT_S}\n```\n"
        )
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*ME, "commit", "-qm", "seed"]):
        subprocess.run(["git", *args], cwd=seed, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(origin)], check=True)
    return origin


def one(server: LocalPrefect, tmp: Path, workers: int) -> tuple[float, list[float], int]:
    """Wall seconds of a whole ``tgflow run`` on ``workers`` workers, the merge hand-off
    gaps, and how many workers took nodes."""
    here = tmp / f"{workers}-workers"
    origin = make_origin(here)
    with machines(server, POOL, here, workers, limit=PER_WORKER):
        started = time.perf_counter()
        done = subprocess.run(
            [TGFLOW, "run", "--origin", str(origin), "--workspace", str(here / "run"),
             "--agent", "scripted", "--validate", "true", "--sandbox", "none",
             "--node-pool", POOL, "--max-parallel", str(TASKS), "--retries", "0"],
            cwd=tgflow_root(), env={**os.environ, "PREFECT_API_URL": server.api_url},
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the run on {workers} worker(s) failed:\n{done.stdout}{done.stderr}")
    records = [node_record(r) for r in node_runs(server.api_url, origin)]
    spans = sorted((r.merge_began, r.merge_ended) for r in records)
    gaps = [
        (began - ended).total_seconds()
        for (_, ended), (began, _) in itertools.pairwise(spans)
        if began is not None and ended is not None
    ]
    return wall, gaps, len({r.ran_on for r in records})


def main() -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="pool-bench-") as tmp_:
        tmp = Path(tmp_)
        with prefect_on_postgres(tmp / "prefect-home") as server:
            runs = {w: one(server, tmp, w) for w in WORKER_COUNTS}
    few, many = WORKER_COUNTS[0], WORKER_COUNTS[-1]
    ideal = {w: math.ceil(TASKS / (PER_WORKER * w)) * AGENT_S for w in WORKER_COUNTS}
    each = f"{TASKS} independent nodes, agents {AGENT_S:g} s, {PER_WORKER} per worker"
    results = []
    for w, (wall, _, used) in runs.items():
        results.append(
            Result(
                "pool",
                f"{each}, {w} worker(s): wall (ideal: agents alone), workers used",
                f"{wall:.1f} s ({ideal[w]:.0f} s), {used}",
            )
        )
    speedup = runs[few][0] / runs[many][0]
    best = ideal[few] / ideal[many]
    results.append(
        Result(
            "pool",
            f"{many} workers / {few}: speed-up (ideal), share of the ideal",
            f"{speedup:.2f}x ({best:.2f}x), {speedup / best:.0%}",
        )
    )
    gaps = sorted(g for _, found, _ in runs.values() for g in found)
    results.append(
        Result(
            "pool",
            "merge hand-off gap across workers, median / max (both runs)",
            f"{statistics.median(gaps):.2f} s / {max(gaps):.2f} s ({len(gaps)} hand-offs)",
        )
    )
    return results


if __name__ == "__main__":
    print(table(main()))
