"""What happened to each node: the records the flow's tables and the after-action review read.

Plain data, JSON-serialisable (pydantic), so the Prefect layer can persist it as a task
result and the review can be rebuilt from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel, Field

from tasks_lib.run.budget import Budget, Spend

Number = TypeVar("Number", int, float)


class NodeStatus(StrEnum):
    COMPLETED = "completed"  # merged, validated, pushed (or already on main)
    FAILED = "failed"
    BLOCKED = "blocked"  # Safe Exit: the agent said it cannot go on
    STALLED = "stalled"  # idle timeout
    TIMED_OUT = "timed_out"  # wall-clock timeout
    SKIPPED = "skipped"  # an upstream node did not complete
    CANCELLED = "cancelled"

    @property
    def retryable(self) -> bool:
        """Transient outcomes a retry can fix; blocked and skipped are not."""
        return self in (NodeStatus.FAILED, NodeStatus.STALLED, NodeStatus.TIMED_OUT)


class Cause(StrEnum):
    """Why an attempt did not complete, from the run's facts (what a retry should address)."""

    CONFLICT = "conflict"  # the merge still conflicted: base moved under the branch
    VALIDATION = "validation"  # a validation command failed (on the branch or merged)
    AGENT = "agent"  # the agent session failed, stalled or timed out
    NO_CHANGE = "no change"  # the agent finished without committing anything
    GIT = "git"  # a git operation failed (origin unreachable, push refused, …)
    SETUP = "setup"  # the task's settings, prompt template or conventions file are wrong
    BUDGET = "budget"  # the task's or the run's budget is spent: a retry would spend more
    USAGE_LIMIT = "usage limit"  # the provider's limit resets later than the node may wait


class Conflict(BaseModel):
    round: int
    files: list[str]
    resolved: bool = False


class UsageWait(BaseModel):
    """A node waited ``seconds`` for ``provider``'s usage limit, until ``until``; ``said``: the
    provider said that reset (else it was tgflow's backoff)."""

    provider: str
    seconds: float
    until: datetime
    said: bool


class Attempt(BaseModel):
    """One develop→integrate try of a node (a Prefect retry starts a new one).

    It keeps every measure of its try, so a node's totals can be rebuilt from its attempts
    however many retries there were.
    """

    number: int
    status: NodeStatus
    reason: str = ""
    cause: Cause | None = None
    started_at: datetime | None = None
    agent_seconds: float = 0.0
    validate_seconds: float = 0.0
    sessions: int = 0
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    tool_errors: int = 0
    conflicts: list[Conflict] = Field(default_factory=list)
    usage_waits: list[UsageWait] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class NodeRecord(BaseModel):
    task_id: str
    name: str = ""
    status: NodeStatus
    reason: str = ""
    cause: Cause | None = None  # why the (last) attempt did not complete
    attempts: list[Attempt] = Field(default_factory=list)
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    agent: str = ""
    agent_seconds: float = 0.0
    validate_seconds: float = 0.0
    sessions: int = 0
    conflicts: list[Conflict] = Field(default_factory=list)
    usage_waits: list[UsageWait] = Field(default_factory=list)  # paused for providers' limits
    commits: list[str] = Field(default_factory=list)
    files_changed: list[str] = Field(default_factory=list)
    merge_commit: str | None = None
    merged_with: list[str] = Field(default_factory=list)  # landed in one batch with these
    # When the merge lock was held for its (last) landing: merges never overlap, across
    # machines too (``merge_lock = "prefect"``).
    merge_began: datetime | None = None
    merge_ended: datetime | None = None
    validation_skipped: bool = False  # its merged tree was the one validated on the branch
    validated_ahead: bool = False  # its batch was validated while the batch before it was
    # The machine its (last) node run worked on, "host:folder of its clones", on a node pool.
    ran_on: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    tool_errors: int = 0
    budget: Budget = Field(default_factory=Budget)  # what the task may spend in this run
    notes: list[str] = Field(default_factory=list)  # things the orchestrator did and says so
    cleanup: dict[str, bool] = Field(default_factory=dict)  # worktree/branch/remote → removed
    already_done: bool = False  # found completed on main; nothing was run
    log_path: str | None = None  # the node's agent and validation output, every attempt

    @property
    def duration_s(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()

    @property
    def retryable(self) -> bool:
        """A transient outcome, and not a spent budget (a retry would only spend more) nor a
        usage limit too far off (a retry now would meet it again)."""
        return self.status.retryable and self.cause not in (Cause.BUDGET, Cause.USAGE_LIMIT)

    @property
    def spend(self) -> Spend:
        return Spend.of(self.tokens_in, self.tokens_out, self.cost_usd)

    def close_attempt(self, number: int) -> NodeRecord:
        """Stamp the finish time and keep this try's measures as attempt ``number`` (nodes
        and reviews alike), so a later retry cannot lose them."""
        self.finished_at = datetime.now(UTC)
        self.attempts.append(
            Attempt(
                number=number,
                status=self.status,
                reason=self.reason,
                cause=self.cause,
                started_at=self.started_at,
                agent_seconds=self.agent_seconds,
                validate_seconds=self.validate_seconds,
                sessions=self.sessions,
                tokens_in=self.tokens_in,
                tokens_out=self.tokens_out,
                cost_usd=self.cost_usd,
                tool_errors=self.tool_errors,
                conflicts=[c.model_copy() for c in self.conflicts],
                usage_waits=[w.model_copy() for w in self.usage_waits],
                notes=list(self.notes),
            )
        )
        return self


def combine(earlier: list[Attempt], latest: NodeRecord) -> NodeRecord:
    """The node over all its attempts: ``latest`` (a closed attempt) with the totals of every
    try, since a Prefect retry starts each attempt from a fresh record.

    Seconds, sessions, tokens, cost and tool errors are summed; conflicts, usage waits and
    notes of every attempt are kept; the node started when its first attempt did.
    """
    attempts = [*earlier, *latest.attempts]
    merged = latest.model_copy(deep=True)
    merged.attempts = [a.model_copy(deep=True) for a in attempts]
    merged.agent_seconds = sum(a.agent_seconds for a in attempts)
    merged.validate_seconds = sum(a.validate_seconds for a in attempts)
    merged.sessions = sum(a.sessions for a in attempts)
    merged.tokens_in = _total([a.tokens_in for a in attempts])
    merged.tokens_out = _total([a.tokens_out for a in attempts])
    merged.cost_usd = _total([a.cost_usd for a in attempts])
    merged.tool_errors = sum(a.tool_errors for a in attempts)
    merged.conflicts = [c.model_copy() for a in attempts for c in a.conflicts]
    merged.usage_waits = [w.model_copy() for a in attempts for w in a.usage_waits]
    merged.notes = [n for a in attempts for n in a.notes]
    first = next((a.started_at for a in attempts if a.started_at is not None), None)
    merged.started_at = first or latest.started_at
    return merged


def _total(values: list[Number | None]) -> Number | None:
    """The sum of the known values; None when no attempt reported any (not measured is not 0)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


class RunRecord(BaseModel):
    """A whole run: what the after-action review is written from."""

    run_name: str
    origin: str
    base: str
    started_at: datetime
    finished_at: datetime
    max_parallel: int
    nodes: list[NodeRecord]
    critical_path: list[str] = Field(default_factory=list)
    critical_path_cost: float = 0.0
    depends_on: dict[str, list[str]] = Field(default_factory=dict)  # to measure chains as run
    max_concurrent: int = 0  # peak number of agent sessions running at once
    budget: Budget = Field(default_factory=Budget)  # what the whole run may spend
    aar_path: str | None = None
    aar_unsaved: str = ""  # why the review is only an artifact, when it is not on the base

    @property
    def spend(self) -> Spend:
        return sum((n.spend for n in self.nodes), Spend())
