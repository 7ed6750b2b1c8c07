"""A provider's usage limit through the real flow, a real agent CLI (OpenCode) and the fake
model answering HTTP 429 for 20 s: no node fails, both pause on the one provider and go on
after its reset, the run completes, and the node's log, its states and the review say what
waited."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from helpers.agent_helpers import require_cli, shell_step
from helpers.fakemodel import FakeModel
from helpers.gitrepos import make_origin, show
from helpers.prefect_fixtures import (
    artifact,
    flow_run,
    flow_run_states,
    task_run_logs,
    task_run_states,
    task_runs,
)

from tasks_lib.run.config import RunConfig

pytestmark = [pytest.mark.prefect, pytest.mark.agents]
# Each node's own file (named after its branch), committed once however many sessions run it.
WRITE = (
    'f="$(git rev-parse --abbrev-ref HEAD | tr / _).txt"; echo done > "$f" && git add -A && '
    "(git diff --cached --quiet || git commit -qm work)"
)


def task_file(task_id: str) -> str:
    return (
        f"---\nid: {task_id}\nname: Task {task_id}\nstatus: pending\n---\n\n"
        f"## Description\n\nWrite a file.\n\n## Acceptance Criteria\n\n- [ ] done\n"
    )


def test_a_usage_limit_pauses_the_run_and_it_completes_after_the_reset(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flows.graph_flow import AAR_KEY, NODES_KEY, tgflow_run

    require_cli("opencode")
    monkeypatch.setenv("FAKE_API_KEY", "fake-key")
    origin = make_origin(tmp_path, {"tasks/a.md": task_file("a"), "tasks/b.md": task_file("b")})
    with FakeModel([shell_step("opencode", WRITE), {"limit": 20, "text": "Done."}]) as fake:
        provider = f"{fake.url}/v1"
        config = RunConfig(
            origin=str(origin),
            agent="opencode",
            model="fake-model",
            agent_base_url=provider,
            agent_api_key_env="FAKE_API_KEY",
            validate_commands=["true"],
            max_parallel=2,
            retries=0,
            idle_timeout_s=60.0,
            workspace_root=str(tmp_path / "ws"),
        )
        state = tgflow_run(config, return_state=True)
        resets = set(fake.limits_sent)

    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    table = {row["task"]: row for row in artifact(run_id, NODES_KEY)}
    assert {table[t]["status"] for t in "ab"} == {"completed"}
    assert [show(origin, f"tgflow_{t}.txt") for t in "ab"] == ["done", "done"]
    assert len(resets) == 1  # one limit, one reset: both nodes met the same
    aar = artifact(run_id, AAR_KEY)
    assert "paused for a provider's usage limit and went on after the reset: " in aar
    assert f"for {provider} (resets said by the provider)" in aar
    nodes = {r.name: r for r in task_runs(run_id)}
    waiting = f"usage limit of {provider}: waiting until "
    assert any(
        m.startswith(waiting) and m.endswith("UTC (reset said by the provider)")
        for m in task_run_logs(nodes["a"].id)
    )
    # What the UI shows of each node: waiting, with the reason, then running until it ends.
    for name in "ab":
        states = [(s.type.value, s.name, s.message or "") for s in task_run_states(nodes[name].id)]
        waits = [i for i, (_, state, _) in enumerate(states) if state == "AwaitingUsageLimit"]
        assert waits, states
        assert all(states[i][0] == "RUNNING" and states[i][2].startswith(waiting) for i in waits)
        after = [s[:2] for s in states[waits[-1] + 1 :]]
        assert after == [("RUNNING", "Running"), ("COMPLETED", "Completed")], states


def test_a_node_on_a_node_pool_shows_its_wait_on_its_own_flow_run(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The node flow a pool's worker runs, run here directly (no worker needed for what it
    shows); its clone goes under HOME, a temporary one."""
    from flows.node_flow import tgflow_node

    require_cli("opencode")
    monkeypatch.setenv("FAKE_API_KEY", "fake-key")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    origin = make_origin(tmp_path, {"tasks/a.md": task_file("a")})
    with FakeModel([shell_step("opencode", WRITE), {"limit": 5, "text": "Done."}]) as fake:
        config = RunConfig(
            origin=str(origin),
            agent="opencode",
            model="fake-model",
            agent_base_url=f"{fake.url}/v1",
            agent_api_key_env="FAKE_API_KEY",
            validate_commands=["true"],
            idle_timeout_s=60.0,
        )
        state = tgflow_node(config, "a", "tasks/a.md", return_state=True)

    assert state.is_completed(), state.message
    states = flow_run_states(state.state_details.flow_run_id)
    waits = [i for i, s in enumerate(states) if s.name == "AwaitingUsageLimit"]
    assert waits, states
    assert all(
        states[i].is_running()
        and (states[i].message or "").startswith(f"usage limit of {fake.url}/v1: waiting until ")
        for i in waits
    )
    assert [s.name for s in states[waits[-1] + 1 :]] == ["Running", "Completed"], states
    assert show(origin, "tgflow_a.txt") == "done"
    # Prefect counts every Running state a flow run enters (docs/usage-limits.md says so).
    assert flow_run(state).run_count == 1 + len(waits) + 1


def test_the_run_shows_a_pool_node_waiting_while_its_node_run_waits(prefect_server: str) -> None:
    """The run's side of a node on a pool: its node task hears the waits of the node run it
    watches (here a flow run whose states the test sets as the node flow does), when they
    begin and when they end, so the node's task run shows them too."""
    from prefect import flow, get_client
    from prefect.states import Completed, Running

    from flows.node_pool import POLL_S, _wait
    from flows.usage_wait import WAITING

    @flow(name="a-node-run")
    def node_run() -> None: ...

    reason = "usage limit of https://api.example/v1: waiting until 12:34:56 UTC (...)"
    with get_client(sync_client=True) as client:
        run_id = client.create_flow_run(node_run, state=Running()).id

        def node_flow() -> None:
            waiting = [Running(name=WAITING, message=reason) for _ in range(2)]
            for state in (waiting[0], Running(), waiting[1], Completed()):
                time.sleep(2.5 * POLL_S)  # the run's side polls: each state is seen
                client.set_flow_run_state(run_id, state)

        setting = threading.Thread(target=node_flow)
        setting.start()
        shown: list[str | None] = []
        final = _wait("a-pool", run_id, threading.Event(), shown.append)
        setting.join()

    assert final.is_completed()
    # A wait ends when the node run goes on, or ends (a crashed one starts again, running).
    assert shown == [reason, None, reason, None]
