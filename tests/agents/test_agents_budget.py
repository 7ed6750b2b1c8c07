"""Budgets kept by tgflow against a REAL agent CLI (OpenCode, which reports usage after every
model call) and the fake model, whose count of what it served is the truth to match.

The script runs past the budget: three shell calls (110 tokens each), then an answer that
never comes (a stall), so a session that is not cut hangs and the test shows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.agent_helpers import require_cli, settings_for, shell_step
from helpers.fakemodel import USAGE_IN, USAGE_OUT, FakeModel
from helpers.gitrepos import make_origin, show

from tasks_lib.agents.registry import make_agent
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.budget import Budget, Ledger, Spend
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus

pytestmark = pytest.mark.agents
SETTINGS = NodeSettings(validate_commands=["true"], idle_timeout_s=60.0)
OVER_BUDGET = [
    shell_step("opencode", "echo one > one.txt"),
    shell_step("opencode", "echo two > two.txt"),
    shell_step("opencode", "git add -A && git commit -qm three"),
    {"text": "Done.", "stall": True},
]
PER_CALL = USAGE_IN + USAGE_OUT


def task_file(budget: str = "") -> str:
    return (
        f"---\nid: costly\nname: Costly\nstatus: pending\n{budget}---\n\n"
        "## Description\n\nWrite one.txt and two.txt.\n\n## Acceptance Criteria\n\n- [ ] done\n"
    )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModel]:
    monkeypatch.setenv("FAKE_API_KEY", "fake-key")
    with FakeModel(OVER_BUDGET) as fake:
        yield fake


def run(
    tmp_path: Path,
    fake: FakeModel,
    task: str,
    ledger: Ledger | None = None,
    settings: NodeSettings = SETTINGS,
) -> NodeRecord:
    require_cli("opencode")
    origin = make_origin(tmp_path, {"README.md": "demo\n", "tasks/costly.md": task})
    ws = Workspace.open(str(origin), tmp_path / "ws")
    found = ws.find_task("costly")
    assert found is not None
    agent = make_agent(settings_for("opencode", fake))
    return run_node(ws, found, agent, settings, ledger=ledger)


def test_a_task_over_its_token_budget_is_stopped_failed_and_not_retried(
    fake: FakeModel, tmp_path: Path
):
    record = run(tmp_path, fake, task_file("budget_tokens: 250\n"))

    spent = 3 * PER_CALL  # the call that reached 250 was the third
    assert record.status is NodeStatus.FAILED and record.cause is Cause.BUDGET
    assert record.reason.startswith(f"budget: {spent} tokens spent of 250 (budget_tokens)")
    assert not record.retryable
    assert (record.tokens_in, record.tokens_out) == fake.served_usage() == (300, 30)
    assert record.budget == Budget(budget_tokens=250)
    on_main = show(tmp_path / "origin.git", "tasks/costly.md")
    assert "status: failed" in on_main and "budget: 330 tokens spent of 250" in on_main


@pytest.mark.serial
def test_without_a_budget_the_same_session_is_not_cut(fake: FakeModel, tmp_path: Path):
    """The stall after the third call is reached: only the budget cut the session above."""
    # Silence that long only after the third call: OpenCode may take seconds to start.
    quick = SETTINGS.model_copy(update={"idle_timeout_s": 15.0})

    record = run(tmp_path, fake, task_file(), settings=quick)

    assert record.status is NodeStatus.STALLED, record.reason
    assert (record.tokens_in, record.tokens_out) == fake.served_usage() == (300, 30)


def test_a_spent_run_budget_cuts_a_running_session_when_told_to(fake: FakeModel, tmp_path: Path):
    ledger = Ledger(Budget(budget_tokens=2 * PER_CALL), stop_running=True)

    record = run(tmp_path, fake, task_file(), ledger)

    assert record.status is NodeStatus.FAILED and record.cause is Cause.BUDGET
    assert record.reason == f"run budget spent: {2 * PER_CALL} tokens spent of 220 (budget_tokens)"
    assert ledger.total().tokens == 2 * PER_CALL == sum(fake.served_usage())


def test_what_earlier_attempts_spent_counts_and_a_spent_budget_starts_no_session(
    fake: FakeModel, tmp_path: Path
):
    ledger = Ledger()
    ledger.settle("costly", Spend(3 * PER_CALL))  # what this run's first attempt spent

    record = run(tmp_path, fake, task_file("budget_tokens: 250\n"), ledger)

    assert record.status is NodeStatus.FAILED and record.cause is Cause.BUDGET
    assert record.reason.startswith("budget: 330 tokens spent of 250 (budget_tokens)")
    assert record.sessions == 0 and fake.scripted_requests() == []
