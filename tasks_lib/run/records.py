"""What happened to each node: the records the flow's tables and the after-action review read.

Plain data, JSON-serialisable (pydantic), so the Prefect layer can persist it as a task
result and the review can be rebuilt from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field


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


class Conflict(BaseModel):
    round: int
    files: list[str]
    resolved: bool = False


class Attempt(BaseModel):
    """One develop→integrate try of a node (a Prefect retry starts a new one)."""

    number: int
    status: NodeStatus
    reason: str = ""
    agent_seconds: float = 0.0
    validate_seconds: float = 0.0
    sessions: int = 0


class NodeRecord(BaseModel):
    task_id: str
    name: str = ""
    status: NodeStatus
    reason: str = ""
    attempts: list[Attempt] = Field(default_factory=list)
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    agent: str = ""
    agent_seconds: float = 0.0
    validate_seconds: float = 0.0
    sessions: int = 0
    conflicts: list[Conflict] = Field(default_factory=list)
    commits: list[str] = Field(default_factory=list)
    files_changed: list[str] = Field(default_factory=list)
    merge_commit: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    tool_errors: int = 0
    notes: list[str] = Field(default_factory=list)  # things the orchestrator did and says so
    cleanup: dict[str, bool] = Field(default_factory=dict)  # worktree/branch/remote → removed
    already_done: bool = False  # found completed on main; nothing was run

    @property
    def duration_s(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()


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
    aar_path: str | None = None
