"""Approval before merge through the real flow and server: a high-risk task's branch waits in
a paused flow run of its own while the rest of the graph goes on; the answer (given here
through the API the UI's Resume form posts to; tests/ui/test_ui_approval.py clicks it) merges
it or leaves it blocked with the note on main; no answer in time blocks it too."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.gitrepos import git, make_origin, show, task_md

from tasks_lib.run.config import RunConfig

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(300)]


def origin_with_a_risky_task(tmp_path: Path) -> Path:
    risky = task_md("risky", steps=[{"write": {"path": "risky.txt", "content": "r\n"}}])
    risky = risky.replace("status: pending", "status: pending\nrisk: high")
    calm = task_md("calm", steps=[{"sleep": 3}, {"write": {"path": "calm.txt", "content": "c\n"}}])
    return make_origin(tmp_path, {"tasks/risky.md": risky, "tasks/calm.md": calm})


def on_main(origin: Path, rel: str) -> bool:
    return bool(git(origin, "ls-tree", "--name-only", "main", rel))


def paused_approval(deadline_s: float = 120) -> Any:
    """The approval flow run once it is Paused for input."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    deadline = time.monotonic() + deadline_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["tgflow-approval"]))
            )
            paused = [r for r in runs if r.state is not None and r.state.is_paused()]
            if paused:
                return paused[0]
            time.sleep(0.5)
    raise AssertionError("no approval flow run paused")


def answer(flow_run: Any, decision: str, note: str) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        result = client.resume_flow_run(flow_run.id, run_input={"decision": decision, "note": note})
    assert result.status.value == "ACCEPT", result


def run_in_thread(config: RunConfig) -> tuple[threading.Thread, dict[str, Any]]:
    from flows.graph_flow import tgflow_run

    out: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: out.update(state=tgflow_run(config, return_state=True))
    )
    thread.start()
    return thread, out


def config_for(origin: Path, tmp_path: Path, **extra: Any) -> RunConfig:
    return RunConfig(
        origin=str(origin), workspace_root=str(tmp_path / "ws"), agent="scripted",
        validate_commands=["true"], sandbox="none", retries=0, max_parallel=2, **extra,
    )  # fmt: skip


def test_a_risky_branch_waits_for_approval_while_the_rest_goes_on_then_merges(
    prefect_server: str, tmp_path: Path
) -> None:
    origin = origin_with_a_risky_task(tmp_path)
    thread, out = run_in_thread(config_for(origin, tmp_path))

    waiting = paused_approval()
    assert waiting.name == "approve risky"
    description = waiting.state.state_details.run_input_keyset  # the form is saved for the UI
    assert description and "description" in description
    deadline = time.monotonic() + 120
    while not on_main(origin, "calm.txt"):  # the other node merged while risky waited
        assert time.monotonic() < deadline, "calm did not merge while risky waited"
        time.sleep(0.5)
    assert not on_main(origin, "risky.txt")
    answer(waiting, "approve", "looks right")
    thread.join(timeout=180)

    assert out["state"].is_completed(), out["state"]
    assert show(origin, "risky.txt") == "r"
    assert "status: completed" in show(origin, "tasks/risky.md")
    aar = [n for n in git(origin, "ls-tree", "--name-only", "main", "docs/aar/").split()]
    assert any(n.endswith(".md") for n in aar)


def test_a_rejected_branch_is_blocked_with_the_note_on_main_and_kept(
    prefect_server: str, tmp_path: Path
) -> None:
    origin = origin_with_a_risky_task(tmp_path)
    thread, out = run_in_thread(config_for(origin, tmp_path))

    answer(paused_approval(), "reject", "touches the billing module; split it first")
    thread.join(timeout=180)

    assert not out["state"].is_completed()
    task_file = show(origin, "tasks/risky.md")
    assert "status: blocked" in task_file
    assert "touches the billing module; split it first" in task_file.split("## Notes", 1)[1]
    assert not on_main(origin, "risky.txt")
    assert git(origin, "rev-parse", "--verify", "-q", "refs/heads/tgflow/risky")  # kept


def test_no_answer_in_time_blocks_the_node_and_keeps_its_branch(
    prefect_server: str, tmp_path: Path
) -> None:
    origin = origin_with_a_risky_task(tmp_path)
    from flows.graph_flow import tgflow_run

    state = tgflow_run(
        config_for(origin, tmp_path, approval_timeout_s=3, only=["risky"]), return_state=True
    )

    assert not state.is_completed()
    assert "no approval within 3 s" in show(origin, "tasks/risky.md")
    assert git(origin, "rev-parse", "--verify", "-q", "refs/heads/tgflow/risky")


def test_a_cancelled_run_ends_the_wait_at_once(prefect_server: str) -> None:
    """A pause waits a day by default; a cancel of the run must not."""
    from prefect import flow

    from flows.approval import CANCELLED, approver
    from tasks_lib.run.approval import ApprovalRequest

    cancel = threading.Event()
    ask = approver(3600, cancel)
    request = ApprovalRequest(
        task_id="risky", name="Risky", branch="tgflow/risky", base="main", why="risk: high",
        diffstat=" a.txt | 1 +", commits=["abc1234 risky: a"], validation="passed",
    )  # fmt: skip

    @flow
    def node() -> object:
        return ask(request)

    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(verdict=node()))
    thread.start()
    paused_approval()
    cancel.set()
    thread.join(timeout=60)

    assert not thread.is_alive(), "the approval still waits after the cancel"
    assert not out["verdict"].approved and out["verdict"].note == CANCELLED
