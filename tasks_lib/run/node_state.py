"""What one attempt of one node knows, shared by its two phases (develop, integrate), and the
failure that ends it.

The phases are plain functions over a ``Node``, so each reads top to bottom and the state an
attempt carries (its worktree, its prompt context, its record) is in one visible place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tasks_lib.agents.base import Agent, Inbox
from tasks_lib.errors import TgflowError
from tasks_lib.git.base import commit_paths
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.edit import update_task_file
from tasks_lib.graph.taskfile import Status, Task, parse_task
from tasks_lib.run.budget import Budget, Ledger, Spend, task_overspent
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.prompt import KeptWork, fenced
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus
from tasks_lib.run.usage import UsageGate


@dataclass
class Landing:
    """What the merge queue did with a branch: landed, conflicted with these files, or
    failed (a culprit of its batch, or the push)."""

    landed: bool = False
    conflicts: list[str] = field(default_factory=list)
    failure: NodeFailed | None = None
    branch_deleted: bool = False  # its branch on the origin went in the same push as base
    local_deleted: bool = False  # its branch in the clone went as that push was recorded


class NodeFailed(TgflowError):
    """Ends the node's attempt with this status and reason (the branch is kept)."""

    def __init__(self, status: NodeStatus, reason: str, cause: Cause | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.cause = cause


@dataclass
class PromptContext:
    """What the prompt is built from besides the task: read once from base per attempt."""

    task_rel: str
    summaries: dict[str, str]
    conventions: str | None
    conventions_file: str | None  # where ``conventions`` came from (the prompt names it)
    template: str | None
    kept: KeptWork | None  # what an earlier run left on the branch, when it was resumed


@dataclass
class Node:
    """One attempt of one task: its inputs, and what it has built up so far."""

    ws: Workspace
    task: Task
    agent: Agent
    settings: NodeSettings
    attempt: int
    record: NodeRecord
    previous_failure: str | None = None
    final_attempt: bool = True
    on_line: Callable[[str], None] = lambda line: None
    cancel: threading.Event = field(default_factory=threading.Event)
    inbox: Inbox = field(default_factory=Inbox)  # a person's messages to its sessions
    # Where each task's file is, relative to the repository root (from the run's graph):
    # a node re-reads only the files it needs instead of parsing the whole tasks folder.
    task_paths: Mapping[str, Path] | None = None
    # Told the files the task branch changes (relative paths) once the agent has worked: the
    # scheduler keeps ready tasks that touch them apart from this one.
    on_changed: Callable[[list[str]], None] = lambda files: None
    on_slot: Callable[[bool], None] = lambda held: None  # see run_node
    budget: Budget = field(default_factory=Budget)  # the task's (``task_budget``)
    ledger: Ledger = field(default_factory=Ledger)  # the run's spend, and its budget
    usage: UsageGate = field(default_factory=UsageGate)  # the run's pauses for usage limits
    warn: Callable[[str], None] = lambda text: None  # what the run's log shows as a warning
    # Why the node waits (a usage limit) when a wait begins, None when it goes on: the run
    # shows it as the node's state.
    on_wait: Callable[[str | None], None] = lambda reason: None
    worktree: Path | None = None
    start_base: str | None = None  # the settled base the attempt started from
    checkpoints: int = 0  # pushes of the session's work to the origin (``run/checkpoints``)
    backed_up: bool = False  # this attempt pushed the branch to the origin (``backup_branch``)
    # The branch reaches the origin with base, not before it (``develop.backup_rides_with_base``)
    defer_backup: bool = False
    context: PromptContext | None = None
    validated_tree: str | None = None  # the tree the last passing validation on the branch saw
    landing: Landing | None = None  # how the merge queue served the branch, once it has

    @property
    def branch(self) -> str:
        return self.ws.branch(self.task.id)

    @property
    def branch_ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def no_more_sessions(self) -> str | None:
        """Why this node may start no session now: its budget or the run's is spent."""
        return task_overspent(self.budget, self.ledger.of(self.task.id)) or self.ledger.run_spent()

    def spending(self, tokens: int, usd: float) -> str | None:
        """A running session has spent this much so far: why it must stop now (the task's
        budget, or the run's when running sessions stop too), or None."""
        self.ledger.report(self.task.id, Spend(tokens, usd))
        return self.cut_for()

    def cut_for(self) -> str | None:
        """Why a running session of this node is (or was) cut, from the ledger."""
        over = task_overspent(self.budget, self.ledger.of(self.task.id))
        return over or (self.ledger.run_spent() if self.ledger.stop_running else None)

    def wt(self) -> Path:
        if self.worktree is None:
            raise RuntimeError(f"{self.task.id}: no worktree yet (develop has not started)")
        return self.worktree

    def on_base(self, task_id: str | None = None) -> Task | None:
        """A task as it is now on the base branch: its file at the settled base (no merge
        still being validated shows), read from git so that no lock is needed; its ``path``
        is the file in the integration worktree, where tgflow edits it under the lock."""
        task_id = task_id or self.task.id
        known = self._known_path(task_id)
        if known is not None:
            text = self.ws.show(self.start_base or self.ws.settled(), known.as_posix())
            if text is not None:
                found, _, _ = parse_task(text, self.ws.integration / known)
                if found is not None and found.id == task_id:
                    return found
        # Moved or renamed on base since the run started: look through the folder.
        return self.ws.find_task(task_id, self.settings.tasks_dir)

    def _known_path(self, task_id: str) -> Path | None:
        """The task's file relative to the repository, as the run's graph found it."""
        known = (self.task_paths or {}).get(task_id)
        own = self.task.path
        if known is None and task_id == self.task.id and own.is_relative_to(self.ws.integration):
            known = own.relative_to(self.ws.integration)
        return known

    def _in_worktree(self, cwd: Path | None = None) -> Task | None:
        """The task file in the integration worktree, or in the checkout ``cwd`` (where it must
        be where the run found it: looking through a folder there is not worth it)."""
        known = self._known_path(self.task.id)
        found = _read((cwd or self.ws.integration) / known) if known is not None else None
        if found is not None and found.id == self.task.id:
            return found
        return None if cwd is not None else self.ws.find_task(self.task.id, self.settings.tasks_dir)

    def write_task_file(
        self,
        status: Status,
        *,
        summary: str | None = None,
        note: str | None = None,
        cwd: Path | None = None,
    ) -> bool:
        """Edit the task file in the integration worktree and commit it on base (the caller
        holds the merge lock: the worktree is base as this change found it, not the settled
        base ``on_base`` reads); or in ``cwd``, a checkout on top of base (``merge``)."""
        on_main = self._in_worktree(cwd)
        if on_main is None:
            raise NodeFailed(NodeStatus.FAILED, f"task file of {self.task.id} vanished from main")
        if not update_task_file(on_main.path, status=status, note=note, summary=summary):
            return False
        message = f"chore: update task {self.task.id} status to {status}"
        commit_paths(self.ws, [on_main.path], message, cwd)
        return True


def _read(path: Path) -> Task | None:
    if not path.is_file():
        return None
    task, _, _ = parse_task(path.read_text(encoding="utf-8"), path)
    return task


def failure_note(what: str, attempt: int, reason: str, by: str = "tgflow") -> str:
    """A ``## Notes`` entry: the reason's first line, the rest in a fence it cannot break."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    first, _, rest = reason.strip().partition("\n")
    text = f"**{what}** ({by}, attempt {attempt}, {when}): {first}"
    if rest.strip():
        text += f"\n\n{fenced(rest.strip(), 'text')}"
    return text
