"""What a person waits for ``tgflow run`` of a small graph: the whole process, with a running
``tgflow server`` to report to, against the same run starting its temporary Prefect server.

The server is started here as ``tgflow server`` starts one (``LocalPrefect`` and its record,
``announced``) on a home of its own; both runs use that home (``--temporary-server`` forces
today's way), so the temporary server finds its database already made, as on a person's
machine. The two are started in turn, round after round, so they see the same machine load;
each run gets a fresh origin (a chain of three scripted tasks, each writing one file) and a
fresh workspace, made before the clock starts.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Result, table
from flows.prefect_server import LocalPrefect, announced, free_port
from tasks_lib.git.runner import run_git

NODES = 3
ROUNDS = 3


def make_origin(tmp: Path, nodes: int) -> Path:
    seed, origin = tmp / "seed", tmp / "origin.git"
    for n in range(nodes):
        after = f"depends_on: [t{n - 1}]\n" if n else ""
        script = f"- write:\n    path: out-{n}.txt\n    content: done\n"
        path = seed / "tasks" / f"t{n}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"---\nid: t{n}\nname: Task {n}\n{after}---\n\n## Description\n\nDo {n}.\n\n"
            f"```tgflow-script\n{script}```\n"
        )
    seed.mkdir(exist_ok=True)
    run_git(seed, "init", "-q", "-b", "main")
    run_git(seed, "add", "-A")
    run_git(seed, "commit", "-qm", "seed", identity=("Bench", "bench@example.invalid"))
    run_git(tmp, "clone", "-q", "--bare", str(seed), str(origin))
    return origin


def whole_run(tmp: Path, home: Path, *flags: str) -> float:
    """One ``tgflow run`` on a fresh origin, start to exit; it must complete."""
    origin = make_origin(tmp, NODES)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    argv = [
        str(Path(sys.executable).parent / "tgflow"), "run", "--origin", str(origin),
        "--workspace", str(tmp / "ws"), "--agent", "scripted", "--validate", "true", *flags,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=tmp, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"tgflow run failed ({done.returncode}): {done.stdout[-2000:]}")
    return took


def main(rounds: int = ROUNDS) -> list[Result]:
    ways = {"running tgflow server": (), "temporary server": ("--temporary-server",)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        local = LocalPrefect(root=Path.cwd(), home=home, port=free_port())
        with local:
            local.start_server()
            with announced(local):
                for i in range(rounds + 1):  # round 0 warms up: page cache, .pyc files
                    for j, (name, flags) in enumerate(ways.items()):
                        run_dir = Path(tmp) / f"round{i}-way{j}"
                        run_dir.mkdir()
                        took = whole_run(run_dir, home, *flags)
                        if i:
                            times[name].append(took)
    reused, temporary = (statistics.median(times[name]) for name in ways)
    return [
        Result(
            "server",
            f"tgflow run, {NODES}-node chain, scripted agent, whole process, with a running "
            f"tgflow server (median of {rounds})",
            f"{reused:.2f} s = {reused / temporary:.2f} × with a temporary server",
        ),
        Result(
            "server",
            "yardstick: the same run starting its temporary server (--temporary-server)",
            f"{temporary:.2f} s",
        ),
    ]


if __name__ == "__main__":
    print(table(main()))
