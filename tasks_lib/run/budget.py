"""Budgets: what a task and a run may spend on agent sessions, enforced by tgflow, not the agent.

A budget is tokens (in + out, as the agent CLI reports them) and/or dollars (the CLI's own
cost figure). A task's budget comes from ``budget_rules`` (by risk, then level, like
``agent_rules``), its frontmatter's ``budget_usd:``/``budget_tokens:`` winning; the run's
from ``budget_usd``/``budget_tokens`` of the run's settings. A budget is spent when what was
spent reaches it.

The ``Ledger`` is where a run's sessions say what they spent while they run (every line a
CLI prints can carry usage), so a task over its budget is cut mid-session and a run over its
budget starts no new session, from figures that are live, not read after the fact.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from tasks_lib.graph.taskfile import Task

RUN_SPENT = "run budget spent: "  # how the reason of a node the run's budget stopped begins


class Budget(BaseModel):
    """At most this much (either, both or neither set); also one ``budget_rules`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget_usd: float | None = Field(None, gt=0, description="Dollars, as the agent reports.")
    budget_tokens: int | None = Field(None, gt=0, description="Tokens in + out.")

    def __bool__(self) -> bool:
        return self.budget_usd is not None or self.budget_tokens is not None

    def __str__(self) -> str:
        parts = [f"{self.budget_tokens:,} tokens"] if self.budget_tokens is not None else []
        parts += [f"${self.budget_usd:,.2f}"] if self.budget_usd is not None else []
        return ", ".join(parts) or "none"


def task_budget(task: Task, rules: Mapping[str, Budget] | None = None) -> Budget:
    """The budget one task runs with: the rule for its risk, then for its level, each amount
    it sets replacing the one before, then the task's own frontmatter."""
    amounts: dict[str, float | int] = {}
    for key in (f"risk:{task.risk}", f"level:{task.level}"):
        rule = (rules or {}).get(key)
        if rule is not None:
            amounts.update(rule.model_dump(exclude_none=True))
    amounts.update(
        (k, v)
        for k, v in (("budget_usd", task.budget_usd), ("budget_tokens", task.budget_tokens))
        if v is not None
    )
    return Budget.model_validate(amounts)


@dataclass(frozen=True)
class Spend:
    tokens: int = 0
    usd: float = 0.0

    @classmethod
    def of(cls, tokens_in: int | None, tokens_out: int | None, usd: float | None) -> Spend:
        """From the figures an agent reports, any of which it may not report (None)."""
        return cls((tokens_in or 0) + (tokens_out or 0), usd or 0.0)

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.tokens + other.tokens, self.usd + other.usd)

    def __str__(self) -> str:
        return f"{self.tokens:,} tokens" + (f", ${self.usd:,.4f}" if self.usd else "")


def overspent(budget: Budget, spend: Spend) -> str | None:
    """What of ``budget`` ``spend`` has reached, as "330 tokens spent of 250 (budget_tokens)";
    None while within it."""
    if budget.budget_tokens is not None and spend.tokens >= budget.budget_tokens:
        return f"{spend.tokens:,} tokens spent of {budget.budget_tokens:,} (budget_tokens)"
    if budget.budget_usd is not None and spend.usd >= budget.budget_usd:
        return f"${spend.usd:,.4f} spent of ${budget.budget_usd:,.2f} (budget_usd)"
    return None


def task_overspent(budget: Budget, spend: Spend) -> str | None:
    """The reason a task over its budget fails with (its branch is kept, and a retry would
    only spend more, so none follows)."""
    said = overspent(budget, spend)
    if said is None:
        return None
    return (
        f"budget: {said}; the branch is kept: raise the task's budget (its frontmatter or "
        "budget_rules) and run it again"
    )


def run_overspent(budget: Budget, spend: Spend) -> str | None:
    """The reason nodes of a run over its budget do not start (and the run fails)."""
    said = overspent(budget, spend)
    return None if said is None else f"{RUN_SPENT}{said}"


class Ledger:
    """What a run's sessions spent, node by node: settled sessions plus each node's running
    one as far as it has reported. Nodes write from their own threads and the scheduler
    reads from its loop, hence the lock.

    ``budget`` is the run's; with ``stop_running`` a session running when it is spent is cut,
    else it finishes (what it was paid for so far is not thrown away) and only new sessions
    are refused.
    """

    def __init__(self, budget: Budget | None = None, stop_running: bool = False) -> None:
        self.budget = budget or Budget()
        self.stop_running = stop_running
        self._lock = threading.Lock()
        self._settled: dict[str, Spend] = {}
        self._live: dict[str, Spend] = {}

    def report(self, task_id: str, live: Spend) -> None:
        """The node's running session has spent ``live`` so far (replaces, not adds)."""
        with self._lock:
            self._live[task_id] = live

    def settle(self, task_id: str, final: Spend) -> None:
        """The node's session (or a whole attempt run elsewhere) ended having spent ``final``."""
        with self._lock:
            self._live.pop(task_id, None)
            self._settled[task_id] = self._settled.get(task_id, Spend()) + final

    def of(self, task_id: str) -> Spend:
        with self._lock:
            return self._settled.get(task_id, Spend()) + self._live.get(task_id, Spend())

    def total(self) -> Spend:
        with self._lock:
            spends = [*self._settled.values(), *self._live.values()]
        return sum(spends, Spend())

    def run_spent(self) -> str | None:
        """Why no new session may start (the run's budget is spent), or None."""
        return run_overspent(self.budget, self.total())
