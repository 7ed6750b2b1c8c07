"""A run's budget through the real flow, a real agent CLI (OpenCode) and the fake model: once
spent, no new session starts, the nodes not started are skipped saying why, the run fails
saying so, and the table and the review give the figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.agent_helpers import require_cli, shell_step, write_and_commit
from helpers.fakemodel import USAGE_IN, USAGE_OUT, FakeModel
from helpers.gitrepos import make_origin, show
from helpers.prefect_fixtures import artifact

from tasks_lib.run.config import RunConfig

pytestmark = [pytest.mark.prefect, pytest.mark.agents]


def task_file(task_id: str, budget: str = "") -> str:
    return (
        f"---\nid: {task_id}\nname: Task {task_id}\nstatus: pending\n{budget}---\n\n"
        f"## Description\n\nWrite out.txt for {task_id}.\n\n## Acceptance Criteria\n\n- [ ] done\n"
    )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModel]:
    monkeypatch.setenv("FAKE_API_KEY", "fake-key")
    with FakeModel(write_and_commit("opencode", Path("."), "out.txt")) as fake:
        yield fake


def test_a_spent_run_budget_starts_no_new_session_and_fails_the_run(
    prefect_server: str, fake: FakeModel, tmp_path: Path
) -> None:
    from flows.graph_flow import AAR_KEY, NODES_KEY, tgflow_run

    require_cli("opencode")
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_file("a", "budget_tokens: 10000\n"),
            "tasks/b.md": task_file("b"),
            "tasks/c.md": task_file("c"),
        },
    )
    session = 3 * (USAGE_IN + USAGE_OUT)  # write, commit, done: 330 tokens
    config = RunConfig(
        origin=str(origin),
        agent="opencode",
        model="fake-model",
        agent_base_url=f"{fake.url}/v1",
        agent_api_key_env="FAKE_API_KEY",
        validate_commands=["true"],
        max_parallel=1,
        retries=1,
        retry_delay_s=0,
        budget_tokens=session - 30,  # the first session spends it
        workspace_root=str(tmp_path / "ws"),
    )

    state = tgflow_run(config, return_state=True)

    spent = "run budget spent: 330 tokens spent of 300 (budget_tokens)"
    assert state.is_failed()
    assert state.message == f"{spent}; 2 of 3 nodes did not complete (2 skipped): b, c"
    assert all("Task: a" in str(r["body"]) for r in fake.scripted_requests())  # b, c never ran
    assert show(origin, "out.txt") == "hello"
    run_id = state.state_details.flow_run_id
    table = {row["task"]: row for row in artifact(run_id, NODES_KEY)}
    assert (table["a"]["status"], table["a"]["tokens"]) == ("completed", sum(fake.served_usage()))
    assert table["a"]["budget"] == "10,000 tokens"
    assert {table[t]["status"] for t in "bc"} == {"skipped"}
    assert {table[t]["reason"] for t in "bc"} == {spent}
    aar = artifact(run_id, AAR_KEY)
    assert (
        "The run's budget was spent: 330 tokens of 300 tokens; stopped or not started: b and c."
        in aar
    )
    assert "a spent 330 tokens of its budget of 10,000 tokens." in aar
    assert f"Skipped b, c: {spent}" in aar


def test_a_task_over_its_budget_is_stopped_and_not_retried(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Three model calls reach the task's 250 tokens; the fourth answer never comes, so only
    the budget ends the session, and with a retry allowed there is still one session."""
    from flows.graph_flow import NODES_KEY, tgflow_run

    require_cli("opencode")
    monkeypatch.setenv("FAKE_API_KEY", "fake-key")
    origin = make_origin(tmp_path, {"tasks/big.md": task_file("big", "budget_tokens: 250\n")})
    script = [
        *(shell_step("opencode", f"echo {n} > {n}.txt") for n in ("one", "two", "three")),
        {"text": "Done.", "stall": True},
    ]
    with FakeModel(script) as fake:
        config = RunConfig(
            origin=str(origin),
            agent="opencode",
            model="fake-model",
            agent_base_url=f"{fake.url}/v1",
            agent_api_key_env="FAKE_API_KEY",
            validate_commands=["true"],
            retries=1,
            retry_delay_s=0,
            workspace_root=str(tmp_path / "ws"),
        )
        state = tgflow_run(config, return_state=True)
        served = fake.served_usage()
        sessions = [r for r in fake.scripted_requests() if r["step"] == 0]

    assert state.is_failed()
    row = artifact(state.state_details.flow_run_id, NODES_KEY)[0]
    assert (row["status"], row["attempts"], row["sessions"]) == ("failed", 1, 1)
    assert row["reason"].startswith("budget: 330 tokens spent of 250 (budget_tokens)")
    assert row["tokens"] == sum(served) == 330 and len(sessions) == 1
    assert "budget: 330 tokens spent of 250" in show(origin, "tasks/big.md")


def test_the_run_form_takes_the_budgets_and_refuses_a_budget_of_nothing() -> None:
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError, validate

    from flows.graph_flow import tgflow_run

    schema = parameter_schema(tgflow_run).model_dump_for_openapi()
    budgets = {
        "budget_usd": 20.0, "budget_tokens": 2_000_000, "budget_stop_running": True,
        "budget_rules": {"risk:high": {"budget_usd": 5}, "level:research": {"budget_tokens": 9}},
    }  # fmt: skip
    validate({"config": {"origin": "o", **budgets}}, schema, raise_on_error=True)
    with pytest.raises(ValidationError):
        validate({"config": {"origin": "o", "budget_tokens": 0}}, schema, raise_on_error=True)
