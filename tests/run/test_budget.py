"""Budgets: where a task's comes from, when one is spent, what the scheduler does then, and
what the review says (the pure parts; tests/agents/test_agents_budget.py and
tests/flows/test_flow_budget.py run them with a real agent CLI)."""

from __future__ import annotations

import queue
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks_lib.graph.dag import TaskGraph
from tasks_lib.graph.taskfile import Status, Task, parse_task
from tasks_lib.run.aar import ACTIONS, RIGHT, WRONG, Line, budgets
from tasks_lib.run.budget import Budget, Ledger, Spend, task_budget, task_overspent
from tasks_lib.run.config import ConfigError, RunConfig
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus, RunRecord
from tasks_lib.run.scheduler import schedule


def run(nodes: list[NodeRecord], budget: Budget | None = None) -> RunRecord:
    now = datetime.now(UTC)
    return RunRecord(
        run_name="r", origin="o", base="main", started_at=now, finished_at=now, max_parallel=1,
        nodes=nodes, budget=budget or Budget(),
    )  # fmt: skip


def task(meta: str = "") -> Task:
    found, problems, _ = parse_task(f"---\nid: t\nname: T\n{meta}---\n", Path("tasks/t.md"))
    assert found is not None, problems
    return found


def test_a_tasks_budget_is_its_risk_rule_then_its_level_rule_then_its_frontmatter(
    tmp_path: Path,
) -> None:
    (tmp_path / ".tgflow.toml").write_text(
        "budget_tokens = 1000000\n"
        '[budget_rules."risk:high"]\nbudget_usd = 5\nbudget_tokens = 100000\n'
        '[budget_rules."level:research"]\nbudget_tokens = 20000\n'
    )
    config = RunConfig(origin="o").with_file(tmp_path)
    rules = config.budget_rules

    assert config.run_budget() == Budget(budget_tokens=1_000_000)
    assert task_budget(task(), rules) == Budget()
    assert task_budget(task("risk: high\n"), rules) == Budget(budget_usd=5, budget_tokens=100_000)
    assert task_budget(task("risk: high\nlevel: research\n"), rules) == Budget(
        budget_usd=5, budget_tokens=20_000
    )
    assert task_budget(task("risk: high\nbudget_usd: 0.5\n"), rules) == Budget(
        budget_usd=0.5, budget_tokens=100_000
    )


def test_a_budget_rule_for_an_unknown_level_is_named(tmp_path: Path) -> None:
    (tmp_path / ".tgflow.toml").write_text('[budget_rules."level:huge"]\nbudget_usd = 1\n')
    with pytest.raises(ConfigError, match=r"\.tgflow\.toml.*unknown rule key\(s\) level:huge"):
        RunConfig(origin="o").with_file(tmp_path)


def test_a_budget_of_nothing_is_a_problem_of_the_task_file() -> None:
    found, problems, _ = parse_task("---\nid: t\nname: T\nbudget_tokens: 0\n---\n", Path("t.md"))
    assert found is None
    assert "budget_tokens: Input should be greater than 0" in problems[0].message


def test_a_budget_is_spent_when_what_was_spent_reaches_it() -> None:
    budget = Budget(budget_tokens=10_000, budget_usd=2)
    assert task_overspent(budget, Spend(9_999, 1.99)) is None
    said = task_overspent(budget, Spend(12_345, 0.5))
    assert said is not None and said.startswith(
        "budget: 12,345 tokens spent of 10,000 (budget_tokens); the branch is kept"
    )
    said = task_overspent(budget, Spend(10, 2.0))
    assert said is not None and said.startswith("budget: $2.0000 spent of $2.00 (budget_usd)")
    assert task_overspent(Budget(), Spend(10**9, 10**6)) is None


def test_the_ledger_counts_settled_sessions_and_the_running_one_as_reported() -> None:
    ledger = Ledger(Budget(budget_tokens=500))
    ledger.settle("a", Spend(200))
    ledger.report("a", Spend(100))  # a's second session, so far
    ledger.report("a", Spend(150))  # replaces, not adds
    ledger.report("b", Spend(100))
    assert (ledger.of("a"), ledger.total()) == (Spend(350), Spend(450))
    assert ledger.run_spent() is None
    ledger.settle("b", Spend(160))  # its final figure, over the last one it reported
    assert ledger.run_spent() == "run budget spent: 510 tokens spent of 500 (budget_tokens)"


def test_a_budget_failure_is_not_retried() -> None:
    spent = NodeRecord(task_id="t", status=NodeStatus.FAILED, cause=Cause.BUDGET)
    agent = NodeRecord(task_id="t", status=NodeStatus.FAILED, cause=Cause.AGENT)
    assert not spent.retryable and agent.retryable


class OneAtATime:
    """submit() finishes the node at once, having spent ``each``, into the run's ledger."""

    def __init__(self, ledger: Ledger, each: Spend) -> None:
        self.ledger, self.each = ledger, each
        self.completions: queue.Queue[NodeRecord] = queue.Queue()
        self.started: list[str] = []

    def submit(self, task_id: str, upstream: list[str]) -> None:
        self.started.append(task_id)
        self.ledger.settle(task_id, self.each)
        self.completions.put(NodeRecord(task_id=task_id, status=NodeStatus.COMPLETED))


def test_a_spent_run_budget_starts_no_more_nodes_and_skips_them_saying_why() -> None:
    graph = TaskGraph(
        [Task(id=i, name=i, path=Path(f"{i}.md"), depends_on=d, status=s) for i, d, s in
         [("a", (), Status.PENDING), ("b", (), Status.PENDING), ("c", (), Status.PENDING),
          ("after-c", ("c",), Status.PENDING), ("done", ("after-c",), Status.COMPLETED)]]
    )  # fmt: skip
    ledger = Ledger(Budget(budget_tokens=300))
    runner = OneAtATime(ledger, Spend(300))

    result = schedule(
        graph,
        max_parallel=1,
        submit=runner.submit,
        completions=runner.completions,
        spent=ledger.run_spent,
    )

    assert runner.started == ["c"]  # the most critical; it spent the whole budget
    why = "run budget spent: 300 tokens spent of 300 (budget_tokens)"
    rest = {i: (r.status, r.reason) for i, r in result.records.items() if i != "c"}
    assert rest == {
        "a": (NodeStatus.SKIPPED, why), "b": (NodeStatus.SKIPPED, why),
        "after-c": (NodeStatus.SKIPPED, why),
        "done": (NodeStatus.COMPLETED, ""),  # completed on the base: no session to refuse
    }  # fmt: skip
    assert result.records["done"].already_done


def test_the_review_says_what_was_spent_against_each_budget_and_which_it_stopped() -> None:
    nodes = [
        NodeRecord(
            task_id="big", status=NodeStatus.FAILED, cause=Cause.BUDGET,
            reason="budget: 330 tokens spent of 250 (budget_tokens); the branch is kept",
            tokens_in=300, tokens_out=30, budget=Budget(budget_tokens=250),
        ),
        NodeRecord(
            task_id="small", status=NodeStatus.COMPLETED, tokens_in=100, tokens_out=10,
            cost_usd=0.25, budget=Budget(budget_usd=1),
        ),
        NodeRecord(
            task_id="late", status=NodeStatus.SKIPPED,
            reason="run budget spent: 440 tokens spent of 400 (budget_tokens)",
        ),
    ]  # fmt: skip
    review = run(nodes, budget=Budget(budget_tokens=400))

    assert budgets(review) == [
        Line(
            WRONG,
            "The run's budget was spent: 440 tokens, $0.2500 of 400 tokens; stopped or not "
            "started: late.",
        ),
        Line(
            ACTIONS,
            "Raise the run's budget (budget_tokens/budget_usd) or give its tasks smaller "
            "ones, then run again: only the unfinished nodes run.",
        ),
        Line(
            WRONG,
            "big spent 330 tokens of its budget of 250 tokens; the budget stopped it and it "
            "was not retried.",
        ),
        Line(RIGHT, "small spent 110 tokens, $0.2500 of its budget of $1.00."),
    ]
    assert budgets(run(nodes[1:2])) == [
        Line(RIGHT, "small spent 110 tokens, $0.2500 of its budget of $1.00.")
    ]
    within = run(nodes[1:2], budget=Budget(budget_usd=10))
    assert budgets(within)[0] == Line(
        RIGHT, "Within the run's budget: 110 tokens, $0.2500 of $10.00."
    )


def test_the_run_budget_flags_set_the_run_settings() -> None:
    from tgflow_cli.main import build_parser
    from tgflow_cli.run_command import _config

    argv = ["run", "--origin", "/o", "--budget-usd", "2.5", "--budget-tokens", "90000"]
    config = _config(build_parser().parse_args([*argv, "--budget-stop-running"]))
    assert config.run_budget() == Budget(budget_usd=2.5, budget_tokens=90_000)
    assert config.budget_stop_running
    assert not _config(build_parser().parse_args(argv)).budget_stop_running
