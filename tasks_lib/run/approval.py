"""Approval before merge: a person says yes or no to a branch that passed its validation,
before it lands on base.

Which tasks wait is a rule of the run (``approve_when``: risk, level or task id); how the
person is asked is the caller's (the flow pauses a flow run of its own for input in the
Prefect UI). A rejection or no answer in time stops the node blocked, its branch kept: the
person's note goes to the task file on base, where the next run's agent reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tasks_lib.agents.settings import RULE_KEYS
from tasks_lib.graph.taskfile import Task

DEFAULT_RULE = ("risk:high", "risk:critical")
TASK_PREFIX = "task:"


@dataclass(frozen=True)
class ApprovalRequest:
    """What the person decides on: the branch, what it changes, how it was validated."""

    task_id: str
    name: str
    branch: str
    base: str
    why: str  # the rule that asked for it, e.g. "risk: high"
    diffstat: str
    commits: list[str]
    validation: str


@dataclass(frozen=True)
class Verdict:
    approved: bool
    note: str = ""
    timed_out: bool = False


Approver = Callable[[ApprovalRequest], Verdict]


def unknown_selectors(selectors: Iterable[str]) -> list[str]:
    """The selectors that name no risk, level or task: a typo would silently skip approvals."""
    return sorted(
        s for s in selectors if s not in RULE_KEYS and not (s.startswith(TASK_PREFIX) and s[5:])
    )


def approval_rule(task: Task, selectors: Iterable[str]) -> str | None:
    """Why ``task`` waits for a person (the selector it matches, in words), or None."""
    own = {f"risk:{task.risk}", f"level:{task.level}", f"{TASK_PREFIX}{task.id}"}
    matched = sorted(own.intersection(selectors))
    return matched[0].replace(":", ": ", 1) if matched else None
