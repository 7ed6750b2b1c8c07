"""Talking to one running node and cancelling another from the Prefect UI, as a person does it
in headless Chromium: Deployments → message → Run → Custom run, the run's name as its page
shows it, the node's task id, the text (or cancel), Submit; the answer on that small flow
run's page.

One real run from the manual deployment on the worker: `talk` is an opencode-server session
against the fake model, held in its first tool call until the message is in; `slow` (scripted)
hangs, `after-slow` depends on it, `other` (scripted) works until `slow` is cancelled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.agent_helpers import require_cli, shell_step
from helpers.fakemodel import FakeModel
from helpers.gitrepos import make_origin, show, task_md
from helpers.uiharness import (
    TERMINAL,
    Api,
    local_prefect,  # noqa: F401 (module-scoped fixture)
)
from playwright.sync_api import Page, expect
from test_ui_browser import (  # noqa: F401 (page: a fixture)
    form_field,
    open_custom_run,
    page,
    shot,
    submit_custom_run,
)

from deployments.definitions import FLOW_NAME, MANUAL, MESSAGE
from flows.prefect_server import LocalPrefect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]
expect.set_options(timeout=30_000)


@pytest.fixture
def fake() -> Iterator[FakeModel]:
    with FakeModel() as fake:
        yield fake


def wait_until(done: Any, what: str, api: Api, run_id: str, timeout_s: float = 240) -> None:
    """Until ``done()``; a run that ends meanwhile fails the test at once, saying how."""
    deadline = time.monotonic() + timeout_s
    while not done():
        state = api.flow_run(run_id)["state"]
        assert state["type"] not in TERMINAL, f"the run ended before {what}: {state['message']}"
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.5)


def start_run(api: Api, tmp_path: Path, fake: FakeModel) -> tuple[Path, str, Path]:
    """The run, from the manual deployment; its origin, flow-run id, and the marks folder
    where the nodes say they work and the gates that hold them are."""
    marks = tmp_path / "marks"
    marks.mkdir()
    scripted = "status: pending\nagent: scripted"
    fake.reset([
        shell_step("opencode", f"until [ -e {marks}/talk.go ]; do sleep 0.1; done"),
        {"tool": "write", "args": {"filePath": "talk.txt", "content": "hello\n"}},
        {"text": "Done."},
    ])  # fmt: skip
    slow = [{"write": {"path": "slow.txt", "content": "half\n"}},
            {"run": f"touch {marks}/slow.works"}, {"hang": True}]  # fmt: skip
    works_until_go = f"touch {marks}/other.works; until [ -e {marks}/other.go ]; do sleep 0.1; done"
    other = [{"run": works_until_go}, {"write": {"path": "other.txt", "content": "other\n"}}]
    after = [{"write": {"path": "after.txt", "content": "after\n"}}]
    origin = make_origin(
        tmp_path,
        {
            "tasks/talk.md": task_md("talk"),
            "tasks/slow.md": task_md("slow", steps=slow).replace("status: pending", scripted),
            "tasks/after-slow.md": task_md("after-slow", steps=after, depends_on=["slow"])
            .replace("status: pending", scripted),
            "tasks/other.md": task_md("other", steps=other).replace("status: pending", scripted),
        },
    )  # fmt: skip
    run_id = api.run_deployment(
        api.deployment(FLOW_NAME, MANUAL)["id"],
        {"config": {"origin": str(origin), "workspace_root": str(tmp_path / "ws"),
                    "agent": "opencode-server", "model": "fake-model",
                    "agent_base_url": f"{fake.url}/v1", "validate_commands": ["true"],
                    "max_parallel": 3, "retries": 0,
                    "sandbox": "none"}},  # the gates and marks are outside the checkouts
    )  # fmt: skip
    return origin, run_id, marks


def send_from_the_form(
    tab: Page, local: LocalPrefect, api: Api, name: str, run: str, task_id: str, **what: Any
) -> dict[str, Any]:
    """What the person does: the message deployment's custom-run form, filled and submitted;
    its flow run once it has ended, after its page showed how."""
    deployment_id = open_custom_run(tab, local, MESSAGE, f"talk-{name}-deployment")
    form_field(tab, "run").locator("textarea").fill(run)
    form_field(tab, "task_id").locator("textarea").fill(task_id)
    if what.get("text"):
        form_field(tab, "text (Optional)").locator("textarea").fill(what["text"])
    if what.get("cancel"):
        toggle = form_field(tab, "cancel (Optional)").get_by_role("switch")
        toggle.click()
        expect(toggle).to_have_attribute("aria-checked", "true")
    shot(tab, f"talk-{name}-form")
    message_run = submit_custom_run(tab, api, deployment_id)
    state = api.wait(message_run, TERMINAL, timeout_s=120)
    tab.goto(f"{local.ui_url}/runs/flow-run/{message_run}", wait_until="networkidle")
    expect(tab.get_by_text(state[1], exact=True).first).to_be_visible()
    said = api.flow_run(message_run)["state"]["message"]
    expect(tab.get_by_text(said).first).to_be_visible()  # its log says the run's answer
    shot(tab, f"talk-{name}-answer")
    return api.flow_run(message_run)


def test_from_the_ui_a_message_reaches_the_model_and_one_node_is_cancelled_alone(
    local_prefect: LocalPrefect,  # noqa: F811
    page: Page,  # noqa: F811
    tmp_path: Path,
    fake: FakeModel,
) -> None:
    require_cli("opencode")
    api = Api(local_prefect.api_url)
    origin, run_id, marks = start_run(api, tmp_path, fake)
    wait_until(fake.scripted_requests, "talk's first model request", api, run_id)
    wait_until((marks / "slow.works").exists, "slow working", api, run_id)
    wait_until((marks / "other.works").exists, "other working", api, run_id)
    name = api.flow_run(run_id)["name"]  # as the run's page shows it

    told = send_from_the_form(
        page, local_prefect, api, "message", name, "talk", text="Please also say hello to Ada."
    )
    (marks / "talk.go").touch()
    cancelled = send_from_the_form(page, local_prefect, api, "cancel", name, "slow", cancel=True)
    (marks / "other.go").touch()
    final = api.wait(run_id, TERMINAL, timeout_s=240)

    assert told["name"] == "message to talk"
    assert (told["state"]["type"], told["state"]["message"]) == (
        "COMPLETED",
        "sent to talk's agent session",
    )
    requests = [json.dumps(r["body"]) for r in fake.scripted_requests()]
    assert "say hello to Ada" not in requests[0]
    assert "say hello to Ada" in requests[1]  # the session's next request
    assert show(origin, "talk.txt") == "hello"

    assert cancelled["name"] == "cancel slow"
    assert cancelled["state"]["type"] == "COMPLETED"
    assert cancelled["state"]["message"].startswith("cancelling slow: it ends cancelled")
    assert final[0] == "FAILED"
    assert api.flow_run(run_id)["state"]["message"] == (
        "2 of 4 nodes did not complete (1 cancelled, 1 skipped): slow, after-slow"
    )
    [table] = [a for a in api.artifacts(run_id) if a["key"] == "tgflow-nodes"]
    statuses = {row["task"]: row["status"] for row in json.loads(table["data"])}
    assert statuses == {
        "talk": "completed",
        "slow": "cancelled",
        "after-slow": "skipped",
        "other": "completed",
    }
    assert show(origin, "other.txt") == "other"
    assert show(origin, "slow.txt", ref="tgflow/slow") == "half"  # its work kept, on its branch
