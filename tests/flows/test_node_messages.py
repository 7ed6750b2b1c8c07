"""A person talks to one running node, and cancels one node, through the run's flow-run input
(``flows/node_messages``): the API path the UI and ``send_input`` use.

The real flow on the real Prefect server; opencode-server against the fake model for a
message that arrives, the scripted agent (which cannot take messages) for one refused and for
a cancel.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers.agent_helpers import require_cli, shell_step
from helpers.fakemodel import FakeModel
from helpers.gitrepos import make_origin, show
from helpers.prefect_fixtures import artifact

from tasks_lib.run.config import RunConfig

pytestmark = pytest.mark.prefect


def task_file(task_id: str, steps: list[dict] | None = None, **meta: Any) -> str:
    front = {"id": task_id, "name": f"Task {task_id}", "status": "pending", **meta}
    script = f"```tgflow-script\n{yaml.safe_dump(steps, sort_keys=False)}```\n\n" if steps else ""
    return (
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n## Description\n\n"
        f"Write {task_id}.txt.\n\n{script}## Acceptance Criteria\n\n- [ ] done\n"
    )


class Run:
    """``tgflow_run`` in a thread of its own, its events in a queue, its flow run's id."""

    def __init__(self, config: RunConfig) -> None:
        from flows.run_context import Event, RunObserver, observing

        self.events: queue.Queue[Event] = queue.Queue()
        self.state: Any = None

        def go() -> None:
            from flows.graph_flow import tgflow_run

            with observing(RunObserver(on_event=self.events.put)):
                self.state = tgflow_run(config, return_state=True)

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()
        flow_run = _running_flow_run()
        self.flow_run_id, self.name = flow_run.id, flow_run.name

    def line(self, task_id: str, containing: str) -> None:
        """Wait for the node's output line ``containing`` (a run that hangs fails the test)."""
        while True:
            event = self.events.get(timeout=120)
            if event.kind == "line" and event.task_id == task_id and containing in event.text:
                return

    def send(self, api: str | None = None, **message: Any) -> dict[str, Any]:
        """Send a node message as a person would (with ``api``, the Prefect API's URL, as the
        raw request docs/talking-to-nodes.md shows), and wait for tgflow's reply to it."""
        from prefect.input import filter_flow_run_input, send_input

        from flows.node_messages import KEY_PREFIX, REPLY_PREFIX, NodeMessage

        def read(exclude: set[str]) -> list[Any]:
            return filter_flow_run_input(
                key_prefix=REPLY_PREFIX, limit=100, exclude_keys=exclude,
                flow_run_id=self.flow_run_id,
            )  # fmt: skip

        before = {i.key for i in read(set())}
        if api is None:
            send_input(NodeMessage(**message), flow_run_id=self.flow_run_id, key_prefix=KEY_PREFIX)
        else:
            httpx.post(
                f"{api}/flow_runs/{self.flow_run_id}/input",
                json={"key": f"{KEY_PREFIX}-1", "value": json.dumps(message)},
            ).raise_for_status()
        replies: list[Any] = []

        def replied() -> bool:
            found = read(before)
            replies.extend(found)
            return bool(found)

        wait_for(replied, f"a reply to {message}")
        return replies[0].decoded_value

    def end(self) -> Any:
        self.thread.join(300)
        assert not self.thread.is_alive(), "the run did not end"
        return self.state


def _running_flow_run() -> Any:
    """The tgflow flow run now running (these tests run one at a time)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    found: list[Any] = []

    def running() -> bool:
        with get_client(sync_client=True) as client:
            found[:] = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["tgflow"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
                ),
            )
        return bool(found)

    wait_for(running, "the run's flow run running")
    assert len(found) == 1, found
    return found[0]


def wait_for(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 120
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModel]:
    monkeypatch.setenv("FAKE_API_KEY", "fake-key")
    with FakeModel() as fake:
        yield fake


def test_a_message_sent_to_the_runs_flow_run_reaches_the_model_in_the_next_request(
    prefect_server: str, tmp_path: Path, fake: FakeModel
) -> None:
    require_cli("opencode")
    gate = tmp_path / "go"  # the agent's first tool call works until the message is in
    fake.reset([
        shell_step("opencode", f"until [ -e {gate} ]; do sleep 0.1; done"),
        {"tool": "write", "args": {"filePath": "talk.txt", "content": "hello\n"}},
        {"text": "Done."},
    ])  # fmt: skip
    origin = make_origin(tmp_path, {"tasks/talk.md": task_file("talk")})
    config = RunConfig(
        origin=str(origin), agent="opencode-server", model="fake-model",
        agent_base_url=f"{fake.url}/v1", agent_api_key_env="FAKE_API_KEY",
        validate_commands=["test -f talk.txt"], workspace_root=str(tmp_path / "ws"),
        sandbox="none",  # the gate is outside the checkout
    )  # fmt: skip
    run = Run(config)
    wait_for(fake.scripted_requests, "the session's first model request")

    reply = run.send(prefect_server, task_id="talk", text="Please also say hello to Ada.")
    gate.touch()
    state = run.end()

    assert reply["delivered"], reply
    assert reply["said"] == "sent to talk's agent session"
    requests = [json.dumps(r["body"]) for r in fake.scripted_requests()]
    assert "say hello to Ada" not in requests[0]
    assert "say hello to Ada" in requests[1]
    assert state.is_completed(), state.message
    assert show(origin, "talk.txt") == "hello"


def test_a_message_the_backend_cannot_take_is_refused_and_one_node_is_cancelled_alone(
    prefect_server: str, tmp_path: Path
) -> None:
    from flows.message_flow import tgflow_node_message

    origin = make_origin(
        tmp_path,
        {
            "tasks/slow.md": task_file(
                "slow", [{"write": {"path": "slow.txt", "content": "half\n"}}, {"hang": True}]
            ),
            "tasks/after-slow.md": task_file(
                "after-slow",
                [{"write": {"path": "after.txt", "content": "after\n"}}],
                depends_on=["slow"],
            ),
            "tasks/other.md": task_file(
                "other", [{"write": {"path": "other.txt", "content": "other\n"}}]
            ),
        },
    )
    config = RunConfig(
        origin=str(origin), agent="scripted", validate_commands=["true"], max_parallel=2,
        workspace_root=str(tmp_path / "ws"), sandbox="none",
    )  # fmt: skip
    run = Run(config)
    run.line("slow", "hanging")

    refused = run.send(task_id="slow", text="are you stuck?")
    # What the UI's form runs (tests/ui/test_ui_talk.py), named by the run's name as shown.
    from_the_form = tgflow_node_message(run=run.name, task_id="slow", text="?", return_state=True)
    cancelled = run.send(task_id="slow", cancel=True)
    state = run.end()

    assert not refused["delivered"]
    assert "slow's agent backend scripted cannot take messages" in refused["said"]
    assert "only opencode-server can" in refused["said"]
    assert from_the_form.is_failed() and from_the_form.message == refused["said"]
    assert cancelled["delivered"] and cancelled["said"].startswith("cancelling slow")
    assert state.is_failed()
    assert (
        state.message == "2 of 3 nodes did not complete (1 cancelled, 1 skipped): slow, after-slow"
    )
    table = {row["task"]: row["status"] for row in artifact(run.flow_run_id, "tgflow-nodes")}
    assert table == {"slow": "cancelled", "after-slow": "skipped", "other": "completed"}
    assert show(origin, "other.txt") == "other"
    assert show(origin, "slow.txt", ref="tgflow/slow") == "half"  # its work kept, on its branch
    assert "status: pending" in show(origin, "tasks/slow.md")  # cancelled writes no failure


def test_a_message_to_no_such_node_is_refused_naming_the_nodes() -> None:
    from flows.node_messages import NodeMessage, Switchboard

    delivered, said = Switchboard().deliver(NodeMessage(task_id="nope", text="hi"), {"a", "b"})

    assert not delivered
    assert said.startswith("no node 'nope' in this run; the nodes are:")
