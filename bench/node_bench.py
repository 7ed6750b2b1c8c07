"""The orchestration overhead of one node on a repository of ~5,000 files.

Everything run_node does except the agent session and the validation commands: sync with
the origin, worktree + branch, commit checks, task-file guard, backup push, merge, status
commit, push, cleanup. The agent here writes one file and commits; there are no validation
commands, and the agent's own time is subtracted anyway.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import Result, table
from tasks_lib.agents.base import Agent, Outcome, SessionRequest, SessionResult
from tasks_lib.git import worktrees
from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node

FILES = 5000
NODES = 5
ME = ["-c", "user.name=Bench", "-c", "user.email=bench@example.invalid"]


class OneFileAgent(Agent):
    """Writes one file and commits it: the cheapest possible agent session."""

    name = "one-file"

    def run(self, request: SessionRequest) -> SessionResult:
        started = time.perf_counter()
        (request.worktree / f"out-{request.task_id}.txt").write_text("done\n")
        for args in (["add", "-A"], [*ME, "commit", "-qm", f"{request.task_id}: one file"]):
            subprocess.run(["git", *args], cwd=request.worktree, check=True, env=None)
        return SessionResult(Outcome.SUCCEEDED, duration_s=time.perf_counter() - started)


def make_origin(tmp: Path, files: int, nodes: int) -> Path:
    seed, origin = tmp / "seed", tmp / "origin.git"
    for i in range(files):
        path = seed / f"pkg{i % 50}" / f"module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""Module {i}."""\n\nVALUE = {i}\n' + "# filler\n" * 10)
    for n in range(nodes):
        path = seed / "tasks" / f"t{n}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"---\nid: t{n}\nname: Task {n}\n---\n\n## Description\n\nDo {n}.\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*ME, "commit", "-qm", "seed"]):
        subprocess.run(["git", *args], cwd=seed, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(origin)], check=True)
    return origin


def main(files: int = FILES, nodes: int = NODES) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        origin = make_origin(Path(tmp), files, 2 * nodes)
        started = time.perf_counter()
        ws = Workspace.open(str(origin), Path(tmp) / "ws")
        reconcile(ws)
        results.append(
            Result("node", f"{files} files: first open (clone) + reconcile", _ms(started))
        )
        for round_, push in enumerate((True, False)):
            overheads = []
            for n in range(round_ * nodes, (round_ + 1) * nodes):
                task = ws.find_task(f"t{n}")
                assert task is not None
                started = time.perf_counter()
                record = run_node(ws, task, OneFileAgent(), NodeSettings(push=push))
                total = time.perf_counter() - started
                assert record.status == "completed", record.reason
                overheads.append(total - record.agent_seconds - record.validate_seconds)
            what = "push to a local bare origin" if push else "push=False"
            results.append(
                Result(
                    "node",
                    f"{files} files: overhead of one node, {what} (median of {nodes})",
                    f"{statistics.median(overheads) * 1000:.0f} ms",
                )
            )
        times = []
        for n in range(nodes):
            started = time.perf_counter()
            worktrees.start_task(ws, f"probe{n}")
            times.append(time.perf_counter() - started)
            worktrees.cleanup(ws, f"probe{n}")
        results.append(
            Result(
                "node",
                f"{files} files: creating one task worktree alone (median of {nodes})",
                f"{statistics.median(times) * 1000:.0f} ms",
            )
        )
    return results


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"


if __name__ == "__main__":
    print(table(main()))
