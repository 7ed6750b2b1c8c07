"""Per-run state the node tasks share, in an importable module (not a global of the flow's
module: ``flow.serve()`` pickles the flow, and such globals do not pickle).

Keyed by flow run id, then task id. It holds what a Prefect task argument should not (the
workspace, the run's agents, the cancel event) and what a retry needs from the attempt before
(its failure output, its attempt records). Listeners let a terminal show live progress.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from tasks_lib.agents.registry import AgentPool
from tasks_lib.agents.settings import AgentSettings
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.dag import TaskGraph
from tasks_lib.run.config import RunConfig
from tasks_lib.run.records import Attempt, NodeRecord, RunRecord


class NodeFailed(Exception):
    """A node ended without completing; carries its record so the flow can report it."""

    def __init__(self, record: NodeRecord, retryable: bool) -> None:
        super().__init__(record, retryable)
        self.record = record
        self.retryable = retryable

    def __str__(self) -> str:
        first = self.record.reason.strip().splitlines()
        return f"{self.record.task_id} {self.record.status.value}: {first[0] if first else ''}"

    def __repr__(self) -> str:  # Prefect logs the repr; the whole record would flood the log
        return f"NodeFailed({str(self)!r})"


@dataclass
class Event:
    kind: Literal["planned", "started", "line", "finished"]
    task_id: str = ""
    text: str = ""
    record: NodeRecord | None = None
    graph: TaskGraph | None = None


@dataclass
class RunState:
    config: RunConfig
    workspace: Workspace
    graph: TaskGraph
    agent_settings: AgentSettings
    agents: AgentPool = field(default_factory=AgentPool)
    cancel: threading.Event = field(default_factory=threading.Event)
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # last failure output per task
    started: dict[str, datetime] = field(default_factory=dict)  # first attempt's start
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_attempt(self, task_id: str) -> int:
        with self.lock:
            return len(self.attempts.get(task_id, [])) + 1

    def finish_attempt(self, task_id: str, record: NodeRecord) -> NodeRecord:
        """The record over all attempts so far (a Prefect retry is a new attempt)."""
        with self.lock:
            earlier = self.attempts.setdefault(task_id, [])
            earlier.extend(record.attempts)
            started = self.started.setdefault(task_id, record.started_at)
            if record.reason:
                self.failures[task_id] = record.reason
            merged = record.model_copy(deep=True)
            merged.attempts = list(earlier)
            merged.agent_seconds = sum(a.agent_seconds for a in earlier)
            merged.validate_seconds = sum(a.validate_seconds for a in earlier)
            merged.sessions = sum(a.sessions for a in earlier)
            merged.started_at = started
            return merged


_runs: dict[str, RunState] = {}
_results: dict[str, RunRecord] = {}
_listeners: list[Callable[[Event], None]] = []
_guard = threading.Lock()


def register(run_id: str, state: RunState) -> None:
    with _guard:
        _runs[run_id] = state


def get(run_id: str) -> RunState:
    try:
        return _runs[run_id]
    except KeyError:
        raise RuntimeError(
            f"no tgflow run state for flow run {run_id}: node tasks run only inside tgflow_run"
        ) from None


def finish(run_id: str, result: RunRecord) -> None:
    with _guard:
        _runs.pop(run_id, None)
        _results[run_id] = result


def discard(run_id: str) -> None:
    with _guard:
        _runs.pop(run_id, None)


def result(run_id: str) -> RunRecord | None:
    return _results.get(run_id)


def notify(event: Event) -> None:
    for listener in list(_listeners):
        listener(event)


@contextmanager
def listening(listener: Callable[[Event], None]) -> Iterator[None]:
    """Receive the events of runs in this process while inside the block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
