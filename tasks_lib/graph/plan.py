"""What ``tgflow plan`` shows of a task graph: counts, layers, what is ready, what to split.

Kept apart from the graph itself: the graph answers single queries (for the scheduler as a
run goes), the plan is one snapshot of all of them for a person, as text or JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel

from tasks_lib.graph.taskfile import Status

if TYPE_CHECKING:  # the graph builds its plan with make_plan: a run-time import would loop
    from tasks_lib.graph.dag import TaskGraph


class CriticalPath(BaseModel):
    ids: list[str]
    cost: int


class DecomposeFlag(BaseModel):
    id: str
    path: str
    risk: str | None
    scope: str | None


class HeldBackFlag(BaseModel):
    """A task left out of the run's graph; ``status`` is what the run will record for it:
    failed (its own file's problem) or skipped (behind a held-back task)."""

    id: str
    status: str
    reason: str


class Plan(BaseModel):
    """What ``tgflow plan`` shows; the JSON form is this model with sorted keys."""

    total: int
    counts: dict[str, int]
    generations: list[list[str]]
    ready: list[str]
    critical_path: CriticalPath
    priorities: dict[str, int]
    decompose: list[DecomposeFlag]
    held_back: list[HeldBackFlag]


def make_plan(graph: TaskGraph, statuses: Mapping[str, Status] | None = None) -> Plan:
    """The plan of the remaining work, with ``statuses`` replacing the files' (a live view)."""
    now = graph.statuses(statuses)
    counts = {s.value: 0 for s in Status}
    for s in now.values():
        counts[s.value] += 1
    path, cost = graph.critical_path(now)
    return Plan(
        total=len(graph),
        counts=counts,
        generations=graph.generations(now),
        ready=graph.ready(now),
        critical_path=CriticalPath(ids=path, cost=cost),
        priorities={i: graph.priority(i) for i in graph.remaining(now)},
        decompose=[
            DecomposeFlag(
                id=i,
                path=str(t.path),
                risk=t.risk.value if t.risk else None,
                scope=t.scope.value if t.scope else None,
            )
            for i in sorted(graph.needs_decomposition(now))
            for t in [graph.tasks[i]]
        ],
        held_back=[
            HeldBackFlag(
                id=h.task_id, status="skipped" if h.upstream else "failed", reason=h.reason
            )
            for h in graph.held_back.values()
        ],
    )
