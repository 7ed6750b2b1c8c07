"""What a person waits for ``tgflow plan`` on 1,000 task files: the whole process, start-up
included (most of it is imports).

Four commands are started in turn, round after round, so they see the same machine load:
``tgflow plan``; the yardstick, an interpreter that only starts (``python -c pass``); the
same plan with every command's module imported first, as the parser did before it imported
only the named command's (the "before"); and the library's floor, a bare process that
imports the library and loads, validates and plans the same folder without printing: what
is left above the floor is the terminal's own cost (its imports and the tables), what is
below it the library's.
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
from bench.graph_bench import write_graph

FILES = 1000
ROUNDS = 7
TARGET_S = 0.25


# A person's interpreter caches compiled modules; with PYTHONDONTWRITEBYTECODE set
# (as some sandboxes and CI images do) every start compiles the edited modules again.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def whole_process(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=ENV)
    return time.perf_counter() - started


def main(files: int = FILES, rounds: int = ROUNDS) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tasks"
        write_graph(folder, files)
        commands = {
            "tgflow plan": [
                sys.executable,
                "-c",
                "import sys; from tgflow_cli.main import main; sys.exit(main(sys.argv[1:]))",
                "plan",
                "--tasks",
                str(folder),
            ],
            "python -c pass": [sys.executable, "-c", "pass"],
            "eager": [
                sys.executable,
                "-c",
                "import sys, importlib; from tgflow_cli import main as cli;"
                " [importlib.import_module(s.split(':')[0]) for s in cli.COMMANDS.values()];"
                " sys.exit(cli.main(sys.argv[1:]))",
                "plan",
                "--tasks",
                str(folder),
            ],
            "library floor": [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from tasks_lib.graph.dag import load_graph;"
                " load_graph(Path(sys.argv[1])).graph.plan()",
                str(folder),
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # a warm-up each: the page cache, the .pyc files
            whole_process(argv)
        for _ in range(rounds):
            for name, argv in commands.items():
                times[name].append(whole_process(argv))
    plan, start, eager, floor = (statistics.median(times[name]) for name in commands)
    verdict = "met" if plan <= TARGET_S else "MISSED"
    return [
        Result(
            "cli",
            f"tgflow plan, {files} task files, whole process (median of {rounds}; "
            f"target ≤ {TARGET_S} s)",
            f"{plan:.3f} s = {plan / start:.1f} × python -c pass, {verdict}",
        ),
        Result("cli", "yardstick: python -c pass", f"{start:.3f} s"),
        Result(
            "cli",
            "before: the same with every command's module imported (the eager parser)",
            f"{eager:.3f} s = {eager / start:.1f} × python -c pass; plan = {plan / eager:.2f} × it",
        ),
        Result(
            "cli",
            f"library floor: import + load + validate + plan of the {files} files, no output",
            f"{floor:.3f} s = {floor / start:.1f} × python -c pass; "
            f"plan = {plan / floor:.2f} × floor",
        ),
    ]


if __name__ == "__main__":
    print(table(main()))
