"""The one interface every agent backend implements.

The pipeline hands a backend a worktree and a prompt and gets back an outcome. Backends
never decide whether the task is done (the orchestrator checks commits and validation),
and never look for the Safe Exit file (the pipeline does that for every backend alike).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from tasks_lib.agents.limits import UsageLimit
from tasks_lib.agents.sandbox import Sandbox
from tasks_lib.errors import TgflowError


class AgentError(TgflowError):
    """A backend could not be set up (a CLI missing, a server that will not start).

    One root for the backends' own troubles, so a session catches them all in one clause and
    fails with the message instead of crashing the node.
    """


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    TIMED_OUT = "timed_out"
    STALLED = "stalled"
    CANCELLED = "cancelled"
    LIMITED = "usage_limited"  # the provider's usage limit: the node waits, then goes on


class Inbox:
    """A person's messages to a session while it runs, from any thread.

    Only a backend that can put a message into its running session opens it, for the
    session's length (``receiving``); a message posted while it is closed is refused, so the
    sender learns it did not arrive instead of it waiting for a session that never comes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[str] = []
        self._open = False

    @contextmanager
    def receiving(self) -> Iterator[None]:
        """Open for one session; what is left when it ends, ``take`` still returns (the backend
        says those were not delivered)."""
        with self._lock:
            self._open = True
        try:
            yield
        finally:
            with self._lock:
                self._open = False

    def post(self, text: str) -> bool:
        """Queue ``text`` for the session; False when no session is receiving."""
        with self._lock:
            if self._open:
                self._messages.append(text)
            return self._open

    def take(self) -> list[str]:
        """The messages posted since the last take, oldest first."""
        with self._lock:
            taken, self._messages = self._messages, []
            return taken


@dataclass
class SessionRequest:
    """What one agent session needs. ``on_line`` receives output as it arrives; with a
    ``sandbox`` the session's processes run inside it. ``over_budget`` hears the session's
    spend so far (tokens in + out, dollars) each time the backend learns more, and answers
    why the session must stop now (a budget is spent), or None: budgets are tgflow's to
    keep, not the agent's. ``inbox``: a person's messages while it runs, for a backend that
    ``takes_messages``."""

    task_id: str
    worktree: Path
    prompt: str
    timeout_s: float = 1800.0
    idle_timeout_s: float = 300.0
    on_line: Callable[[str], None] = lambda line: None
    cancel: threading.Event = field(default_factory=threading.Event)
    model: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    sandbox: Sandbox | None = None
    over_budget: Callable[[int, float], str | None] = lambda tokens, usd: None
    inbox: Inbox = field(default_factory=Inbox)


@dataclass
class SessionResult:
    outcome: Outcome
    reason: str = ""
    log: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    tool_errors: int = 0
    pids: list[int] = field(default_factory=list)
    limit: UsageLimit | None = None  # with ``Outcome.LIMITED``: what the provider said

    @property
    def tail(self) -> str:
        """The last lines of output: what a retry's prompt and an error message show."""
        return "\n".join(self.log[-40:])


class Agent(Protocol):
    """A backend: subclass it, so that ``close`` and ``model`` are there for every one (the
    pool closes each; a node names the model in its commits' author).

    A Protocol, so the type checker also accepts a double that defines all three itself.
    """

    name: str
    model: str | None = None  # the model it runs with when a task names none, if it knows
    # Whose usage limits its sessions share (a base URL, a model's provider); None: its name.
    provider: str | None = None
    takes_messages: bool = False  # puts ``SessionRequest.inbox`` messages into its session

    def run(self, request: SessionRequest) -> SessionResult: ...

    def close(self) -> None:
        """Release what the backend holds across sessions (a server process); most hold none."""
        return None  # a body, so explicit subclasses inherit a method, not an abstract one
