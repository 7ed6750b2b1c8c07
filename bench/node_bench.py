"""tgflow's cost per node against a yardstick: the same git steps by hand in a shell script.

A number of milliseconds alone says nothing about whether tgflow is slow: a 5,000-file
checkout costs what it costs whoever makes it. So each round runs a chain of nodes through
``run_node`` exactly as a run does (after the run's reconcile, which is per run and not
counted; an agent that writes one file and commits, no validation commands, main pushed to a
bare origin in a folder beside it), then the same number of tasks through ``yardstick.sh``
(worktree + branch, the one-file commit, merge --no-ff, push, delete branch and worktree) on
a repository built the same way. Rounds alternate, so a machine that slows down mid-bench
slows both sides; the ratio is taken round by round and its median reported. The shell side
is timed whole, its own commit included; from tgflow's side only the agent session is
subtracted (its commit is in there).

The repositories go in memory (``/dev/shm``) by default. Both sides create and delete a
checkout per task, and on an ext4 without a journal (the machine this was written on) each
new inode is first checked against recently deleted ones (the kernel's ``recently_deleted``):
a 5,000-file checkout then takes 0.1 to 5 s by what this process and every other one on the
machine deleted in the last seconds, on either side, which swamps the difference being
measured. Pass ``where`` to measure on a disk.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from bench import Result, table
from tasks_lib.agents.base import Agent, Outcome, SessionRequest, SessionResult
from tasks_lib.git import runner
from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.taskfile import Task
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node

SIZES = (50, 5000)
ROUNDS = 3
NODES = 10
TARGETS = {50: 1.5, 5000: 1.0}  # issue 12: tgflow / shell at most this
YARDSTICK = Path(__file__).with_name("yardstick.sh")
# In memory where there is such a folder: see the module's docstring.
TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
ME = ["-c", "user.name=Bench", "-c", "user.email=bench@example.invalid"]


class OneFileAgent(Agent):
    """Writes one file and commits it: the cheapest possible agent session."""

    name = "one-file"

    def run(self, request: SessionRequest) -> SessionResult:
        started = time.perf_counter()
        (request.worktree / f"out-{request.task_id}.txt").write_text("done\n")
        for args in (["add", "-A"], [*ME, "commit", "-qm", f"{request.task_id}: one file"]):
            subprocess.run(["git", *args], cwd=request.worktree, check=True)
        return SessionResult(Outcome.SUCCEEDED, duration_s=time.perf_counter() - started)


def make_origin(tmp: Path, files: int, tasks: int) -> Path:
    """A bare origin of ``files`` small modules and ``tasks`` task files, one commit."""
    seed, origin = tmp / "seed", tmp / "origin.git"
    for i in range(files):
        path = seed / f"pkg{i % 50}" / f"module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""Module {i}."""\n\nVALUE = {i}\n' + "# filler\n" * 10)
    for n in range(tasks):
        path = seed / "tasks" / f"t{n}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"---\nid: t{n}\nname: Task {n}\n---\n\n## Description\n\nDo {n}.\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*ME, "commit", "-qm", "seed"]):
        subprocess.run(["git", *args], cwd=seed, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(origin)], check=True)
    return origin


class GitCount:
    """The git commands tgflow starts: every one goes through ``runner._execute``; the agent's
    own do not and are not seen (nor are the clone's reader and ref writer, one process each
    for all nodes, whose requests are timed with the rest of tgflow's work)."""

    def __init__(self) -> None:
        self.commands = 0

    @contextmanager
    def counting(self) -> Iterator[None]:
        original = runner._execute

        def execute(*args: Any) -> Any:
            self.commands += 1
            return original(*args)

        with mock.patch.object(runner, "_execute", execute):
            yield


def tgflow_round(ws: Workspace, ids: list[str], count: GitCount) -> float:
    """Seconds of tgflow's own work for the chain ``ids``, agent sessions subtracted."""
    with ws.merge_lock:
        reconcile(ws, push=True)  # the run's start, before any node
    tasks = [ws.find_task(task_id) for task_id in ids]
    chain = [t for t in tasks if t is not None]
    assert len(chain) == len(ids), f"task files missing on main of {ws.origin}"
    paths = {t.id: t.path.relative_to(ws.integration) for t in chain}
    return sum(_node(ws, task, paths, count) for task in chain)


def _node(ws: Workspace, task: Task, paths: dict[str, Path], count: GitCount) -> float:
    with count.counting():
        started = time.perf_counter()
        record = run_node(ws, task, OneFileAgent(), NodeSettings(push=True), task_paths=paths)
        total = time.perf_counter() - started
    assert record.status == "completed", f"{task.id}: {record.reason}"
    return total - record.agent_seconds


def shell_round(clone: Path, ids: list[str]) -> float:
    """Seconds of the yardstick script for the chain ``ids``, nothing subtracted."""
    started = time.perf_counter()
    subprocess.run(["sh", str(YARDSTICK), str(clone), *ids], check=True)
    return time.perf_counter() - started


def check_pushed(origin: Path, ids: list[str]) -> None:
    """Both sides must have done the work: every task's file on the origin's main."""
    for task_id in ids:
        subprocess.run(
            ["git", "-C", str(origin), "cat-file", "-e", f"main:out-{task_id}.txt"], check=True
        )


def compare(files: int, rounds: int, nodes: int, where: Path | None) -> list[Result]:
    """``rounds`` interleaved rounds of ``nodes`` tasks on two origins of ``files`` files."""
    with tempfile.TemporaryDirectory(prefix="node-bench-", dir=where) as tmp_:
        tmp = Path(tmp_)
        origins = [make_origin(tmp / side, files, rounds * nodes) for side in ("tgflow", "shell")]
        started = time.perf_counter()
        ws = Workspace.open(str(origins[0]), tmp / "tgflow" / "ws")
        opened = time.perf_counter() - started
        clone = tmp / "shell" / "main"
        subprocess.run(["git", "clone", "-q", str(origins[1]), str(clone)], check=True)
        count = GitCount()
        tg: list[float] = []
        sh: list[float] = []
        for r in range(rounds):
            ids = [f"t{n}" for n in range(r * nodes, (r + 1) * nodes)]
            tg.append(tgflow_round(ws, ids, count) / nodes)
            sh.append(shell_round(clone, ids) / nodes)
            for origin in origins:
                check_pushed(origin, ids)
    ratios = [t / s for t, s in zip(tg, sh, strict=True)]
    each = f"{files} files, {nodes}-node chain, median of {rounds} rounds"
    target = f"; target <= {TARGETS[files]:g}x" if files in TARGETS else ""
    return [
        Result("node", f"{files} files: tgflow's first open (clone)", _ms(opened)),
        Result("node", f"{each}: tgflow per node", _ms(statistics.median(tg))),
        Result("node", f"{each}: shell script per node", _ms(statistics.median(sh))),
        Result(
            "node",
            f"{files} files: tgflow / shell (median of per-round ratios, min-max{target})",
            f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})",
        ),
        Result(
            "node",
            f"{files} files: git commands tgflow starts per node (the shell script: "
            f"{_script_commands()})",
            f"{count.commands / (rounds * nodes):.1f}",
        ),
    ]


def main(
    sizes: tuple[int, ...] = SIZES,
    rounds: int = ROUNDS,
    nodes: int = NODES,
    where: Path | None = TMPFS,
) -> list[Result]:
    """``where``: the folder the repositories go in (None: the system's temporary folder)."""
    place = Result("node", "repositories under", str(where or tempfile.gettempdir()))
    return [place, *(result for files in sizes for result in compare(files, rounds, nodes, where))]


def _script_commands() -> int:
    """Git commands the yardstick starts per task: one per ``git`` line of its loop."""
    return sum(line.lstrip().startswith("git ") for line in YARDSTICK.read_text().splitlines())


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    print(table(main()))
