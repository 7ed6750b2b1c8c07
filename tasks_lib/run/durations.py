"""Durations learned from the repository's earlier runs, for the scheduler's priorities.

Each run commits, beside its after-action review, a small JSON history (``run_history``):
per node that ran, its status, scope, risk, agent and validation seconds, attempts and when
it held the merge lock. Only those fields: the review's text holds local paths and failure
output, the history nothing but ids, enums, numbers and times. A later run reads the
histories on its base branch (``learned_costs``) and weighs each task by what such work took
before; a repository without any history stays on scope costs.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks_lib.graph.taskfile import DEFAULT_COST, Risk, Scope, Task
from tasks_lib.run.aar import ran
from tasks_lib.run.records import NodeStatus, RunRecord

FORMAT = "tgflow-run-history"
# Only the newest runs are read: set-up time stays bounded as reviews pile up, and what
# tasks take drifts as the project changes.
RECENT_RUNS = 50
# A (scope, risk) class is trusted from this many completed nodes on; below, its scope's
# median is less noisy (bench/priority_bench.py, same graphs, risk telling nothing: p90 of
# makespan / LB at 8 slots 1.080 from any class, 1.069 from classes of 5 or more).
CLASS_SAMPLES = 5


class NodeHistory(BaseModel):
    """One node of one run, as far as scheduling (and the merge lock) cares."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    status: NodeStatus
    scope: Scope | None = None
    risk: Risk | None = None
    agent_seconds: float = Field(ge=0)
    validate_seconds: float = Field(ge=0)
    attempts: int = Field(ge=0)
    # When it held the merge lock for its landing: where runs on several machines share a
    # repository, their histories show merges never overlap (``merge_lock = "prefect"``).
    merge_began: datetime | None = None
    merge_ended: datetime | None = None

    @property
    def seconds(self) -> float:
        """The time the node held a slot doing work, every attempt of it."""
        return self.agent_seconds + self.validate_seconds


class RunHistory(BaseModel):
    """A run's history file. ``format`` has no default, so another tool's JSON in the same
    folder is told apart instead of read as a run with no nodes."""

    format: Literal["tgflow-run-history"]
    version: Literal[1]
    run_name: str
    nodes: list[NodeHistory]


def run_history(run: RunRecord, tasks: Mapping[str, Task]) -> RunHistory:
    """The history of ``run``: its nodes that ran (a node already done or skipped says
    nothing about durations), scope and risk as ``tasks`` (the run's graph) had them."""
    nodes = []
    for node in run.nodes:
        if not ran(node):
            continue
        task = tasks.get(node.task_id)
        nodes.append(
            NodeHistory(
                task_id=node.task_id,
                status=node.status,
                scope=task.scope if task else None,
                risk=task.risk if task else None,
                agent_seconds=round(node.agent_seconds, 1),
                validate_seconds=round(node.validate_seconds, 1),
                attempts=len(node.attempts),
                merge_began=node.merge_began,
                merge_ended=node.merge_ended,
            )
        )
    return RunHistory(format=FORMAT, version=1, run_name=run.run_name, nodes=nodes)


def history_path(aar_path: str) -> str:
    """Where a run's history goes: beside its review, the same name ending in ``.json``
    (run names start with their start time, so names sort as the runs ran)."""
    return str(PurePosixPath(aar_path).with_suffix(".json"))


@dataclass(frozen=True)
class Learned:
    """What the histories say about a graph's tasks.

    ``durations``: expected seconds per task id, None when nothing was learned for it.
    ``costs``: every task's scheduling cost in seconds (``TaskGraph.with_costs``), empty
    when no history has a completed node. ``warnings``: one line per file skipped.
    """

    durations: dict[str, float | None]
    costs: dict[str, int]
    warnings: list[str]


def read_histories(aar_dir: Path) -> tuple[list[RunHistory], list[str]]:
    """The newest ``RECENT_RUNS`` histories in ``aar_dir``, and a warning per file that is
    not one (skipped: a bad file must never stop a run)."""
    found: list[RunHistory] = []
    warnings: list[str] = []
    for path in sorted(aar_dir.glob("*.json"), reverse=True):
        if len(found) == RECENT_RUNS:
            break
        try:
            found.append(RunHistory.model_validate_json(path.read_bytes()))
        except (OSError, ValidationError) as e:
            warnings.append(
                f"{path}: not a tgflow run history ({_first_error(e)}); skipped when learning "
                "task durations (delete or move the file)"
            )
    return found, warnings


def _first_error(e: OSError | ValidationError) -> str:
    """Short on purpose: pydantic's own wording repeats the input, here a whole file."""
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def learned_costs(aar_dir: Path, tasks: Iterable[Task]) -> Learned:
    """Each task's expected duration from the histories in ``aar_dir``, and the costs the
    scheduler weighs the graph by.

    A task's own completed runs say most (their median); else the median of completed nodes
    of its (scope, risk) class when it has ``CLASS_SAMPLES``, else of its scope (no scope
    counts as a scope of its own). Runs of the task that did not complete are a lower bound:
    it took that long without finishing, so the expectation is raised to the longest of them.

    Costs are in seconds: a task with nothing learned gets its scope cost times the median
    seconds per scope cost unit of the completed nodes in history. Seconds rather than scope
    units, because learned figures are the better-founded side and keep their meaning (a
    critical path in seconds); the median ratio rather than a fit, because a few runaway
    sessions must not rescale every scope. Medians throughout for the same reason.
    """
    histories, warnings = read_histories(aar_dir)
    own: dict[str, list[float]] = defaultdict(list)
    unfinished: dict[str, list[float]] = defaultdict(list)
    by_class: dict[tuple[Scope | None, Risk | None], list[float]] = defaultdict(list)
    by_scope: dict[Scope | None, list[float]] = defaultdict(list)
    per_unit: list[float] = []
    for n in (n for h in histories for n in h.nodes):
        if n.status is not NodeStatus.COMPLETED:
            unfinished[n.task_id].append(n.seconds)
            continue
        own[n.task_id].append(n.seconds)
        by_class[n.scope, n.risk].append(n.seconds)
        by_scope[n.scope].append(n.seconds)
        if n.seconds > 0:
            per_unit.append(n.seconds / (n.scope.cost if n.scope else DEFAULT_COST))
    unit = statistics.median(per_unit) if per_unit else None
    durations: dict[str, float | None] = {}
    costs: dict[str, int] = {}
    for task in tasks:
        kind = by_class.get((task.scope, task.risk), [])
        enough = kind if len(kind) >= CLASS_SAMPLES else None
        known = own.get(task.id) or enough or by_scope.get(task.scope)
        expected = statistics.median(known) if known else None
        if unit is not None and task.id in unfinished and task.id not in own:
            guess = expected if expected is not None else task.cost * unit
            expected = max(guess, *unfinished[task.id])
        durations[task.id] = expected
        if unit is not None:
            costs[task.id] = max(1, round(expected if expected is not None else task.cost * unit))
    return Learned(durations, costs, warnings)
