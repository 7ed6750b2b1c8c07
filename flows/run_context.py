"""What the node tasks of one flow run share, and how a caller in the same process watches it.

Both travel in context variables, not module globals: the flow body sets the run's state,
and Prefect's ThreadPoolTaskRunner runs each task in a copy of the submitting context, so
every node of that run (and only of that run) sees it. A caller that runs the flow in its own
process (the terminal) sets a ``RunObserver`` around the call to receive events and the final
record. At module level both variables hold no value, so ``flow.serve()`` and deployments,
which pickle the flow, are unaffected.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from flows.node_messages import Switchboard
from tasks_lib.agents.registry import AgentPool
from tasks_lib.agents.settings import AgentSettings
from tasks_lib.errors import TgflowError
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.dag import TaskGraph
from tasks_lib.run.budget import Ledger
from tasks_lib.run.config import RunConfig
from tasks_lib.run.records import Attempt, Cause, NodeRecord, RunRecord, combine
from tasks_lib.run.scheduler import ChangedFiles, Slot
from tasks_lib.run.secrets import Masker
from tasks_lib.run.usage import UsageGate


class NodeFailed(TgflowError):
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


def _ignore(event: Event) -> None:
    """No one is watching (a run from a worker or ``serve``)."""


@dataclass
class RunObserver:
    """The caller's side of a flow run in its own process: live events while it runs, the
    run's record once it is written (None if the run ended before that)."""

    on_event: Callable[[Event], None] = _ignore
    record: RunRecord | None = None


_observer: ContextVar[RunObserver | None] = ContextVar("tgflow_observer", default=None)
_run: ContextVar[RunState | None] = ContextVar("tgflow_run_state", default=None)


@contextmanager
def observing(observer: RunObserver) -> Iterator[RunObserver]:
    """Flow runs started inside the block report to ``observer``."""
    token = _observer.set(observer)
    try:
        yield observer
    finally:
        _observer.reset(token)


def observer() -> RunObserver:
    """The observer set around this flow call, or one no one reads."""
    return _observer.get() or RunObserver()


@dataclass
class RunState:
    """What a Prefect task argument should not carry (the workspace, the run's agents, the
    cancel event), what a retry needs from the attempts before (their failure output and
    their records), and what the nodes' branches change, which the flow's scheduler reads
    from its own thread."""

    config: RunConfig
    workspace: Workspace
    graph: TaskGraph
    agent_settings: AgentSettings
    observer: RunObserver = field(default_factory=RunObserver)
    agents: AgentPool = field(default_factory=AgentPool)
    cancel: threading.Event = field(default_factory=threading.Event)
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # what the next attempt must fix
    causes: dict[str, Cause] = field(default_factory=dict)  # why the last attempt failed
    changed: ChangedFiles = field(default_factory=ChangedFiles)  # each node's branch, as reported
    news: queue.Queue[NodeRecord | Slot] = field(default_factory=queue.Queue)  # for schedule()
    ledger: Ledger = field(default_factory=Ledger)  # what the sessions spent, live; the budget
    usage: UsageGate = field(default_factory=UsageGate)  # providers' usage limits: their pauses
    lock: threading.Lock = field(default_factory=threading.Lock)
    switchboard: Switchboard = field(default_factory=Switchboard)  # a person's line to a node

    @cached_property
    def task_paths(self) -> dict[str, Path]:
        """Each task's file relative to the repository: nodes re-read only these files."""
        root = self.workspace.integration
        return {t.id: t.path.relative_to(root) for t in self.graph if t.path.is_relative_to(root)}

    @cached_property
    def mask(self) -> Masker:
        """The run's API keys masked in every sink; built on first use, after the flow
        copied any Secret block into the environment (``export_secrets``)."""
        return Masker.from_env([self.config.agent_api_key_env, self.agent_settings.api_key_env])

    def notify(self, event: Event) -> None:
        self.observer.on_event(event)

    def next_attempt(self, task_id: str) -> int:
        with self.lock:
            return len(self.attempts.get(task_id, [])) + 1

    def finish_attempt(self, task_id: str, record: NodeRecord) -> NodeRecord:
        """The record over all attempts so far (a Prefect retry is a new attempt).

        An attempt that failed only on a conflict leaves nothing to fix: its retry is one
        more conflict round on the kept branch, not an agent told to find the cause."""
        with self.lock:
            merged = combine(self.attempts.get(task_id, []), record)
            self.attempts[task_id] = merged.attempts
            if record.cause is not None:
                self.causes[task_id] = record.cause
            if record.cause is Cause.CONFLICT:
                self.failures.pop(task_id, None)
            elif record.reason:
                self.failures[task_id] = record.reason
            return merged


@contextmanager
def running(state: RunState) -> Iterator[RunState]:
    """The node tasks submitted inside the block belong to ``state``'s run."""
    token = _run.set(state)
    try:
        yield state
    finally:
        _run.reset(token)


def current() -> RunState:
    state = _run.get()
    if state is None:
        raise RuntimeError("no tgflow run state here: node tasks run only inside tgflow_run")
    return state
