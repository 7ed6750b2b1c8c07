"""Approval in the UI, as a reviewer does it in headless Chromium: a high-risk task's branch
waits in a paused approval flow run; the reviewer opens it, presses Resume, reads the branch,
diff stat and validation in the form, and approves (the branch merges) or rejects with a note
(the task ends blocked, the note on main, the branch kept)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from helpers.gitrepos import git, make_origin, show, task_md
from helpers.uiharness import (
    TERMINAL,
    Api,
    local_prefect,  # noqa: F401 (module-scoped fixture)
)
from playwright.sync_api import Page, expect
from test_ui_browser import form_field, page, shot  # noqa: F401 (page: a fixture)

from deployments.definitions import FLOW_NAME, MANUAL
from flows.prefect_server import LocalPrefect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]
expect.set_options(timeout=30_000)


def start_risky_run(api: Api, tmp_path: Path) -> tuple[Path, str]:
    risky = task_md("risky", steps=[{"write": {"path": "risky.txt", "content": "risky\n"}}])
    origin = make_origin(
        tmp_path,
        {"tasks/risky.md": risky.replace("status: pending", "status: pending\nrisk: high")},
    )
    manual = api.deployment(FLOW_NAME, MANUAL)
    run_id = api.run_deployment(
        manual["id"],
        {"config": {"origin": str(origin), "workspace_root": str(tmp_path / "ws"),
                    "agent": "scripted", "validate_commands": ["test -s risky.txt"],
                    "sandbox": "none", "retries": 0}},
    )  # fmt: skip
    return origin, run_id


def paused_approval(api: Api, run_id: str) -> dict[str, Any]:
    """The approval of the run ``run_id`` (nested in one of its task runs), once Paused."""
    deadline = time.monotonic() + 240
    body = {"flows": {"name": {"any_": ["tgflow-approval"]}}}
    while time.monotonic() < deadline:
        for run in api.ok(api.http.post("/flow_runs/filter", json=body)):
            parent = api.ok(api.http.get(f"/task_runs/{run['parent_task_run_id']}"))
            if run["state_type"] == "PAUSED" and parent["flow_run_id"] == run_id:
                return run
        assert api.state(run_id)[0] not in TERMINAL, api.flow_run(run_id)["state"]
        time.sleep(1.0)
    raise AssertionError("no approval flow run paused")


def answer_in_the_ui(
    tab: Page, local: LocalPrefect, approval: dict[str, Any], decision: str, note: str, name: str
) -> None:
    """What the reviewer does: open the paused approval, Resume, read, decide, Submit."""
    tab.goto(f"{local.ui_url}/runs/flow-run/{approval['id']}", wait_until="networkidle")
    expect(tab.get_by_text("Paused").first).to_be_visible()
    tab.get_by_role("button", name="Resume").first.click()
    form = tab.get_by_role("dialog")
    expect(form.get_by_text("tgflow/risky", exact=True).first).to_be_visible()
    tab.wait_for_timeout(1000)  # the dialog fades in; its form takes input once it is in
    expect(form.get_by_text("risky.txt | 1 +")).to_be_visible()  # the diff stat
    expect(form.get_by_text("passed on the branch")).to_be_visible()  # the validation
    # Chosen even when it is the default shown, as a careful reviewer does. The select opens
    # from its chevron (a click on the value button does not open it).
    form_field(tab, "Decision (Optional)").locator(".p-select-button__icon").click()
    tab.get_by_role("option", name=decision, exact=True).click()
    if note:
        form_field(tab, "Note (Optional)").locator("textarea").fill(note)
    shot(tab, f"{name}-resume-form")
    # Seen on a loaded machine: a Submit pressed while the dialog still faded in was lost,
    # the dialog stayed open. A person presses again; so does this, until the dialog closes.
    for _ in range(3):
        form.get_by_role("button", name="Submit", exact=True).click()
        try:
            expect(form).to_be_hidden(timeout=10_000)
            break
        except AssertionError:
            shot(tab, f"{name}-still-open")
    expect(form).to_be_hidden()


def test_the_reviewer_approves_in_the_ui_and_the_branch_merges(
    local_prefect: LocalPrefect,  # noqa: F811
    page: Page,  # noqa: F811
    tmp_path: Path,
) -> None:
    api = Api(local_prefect.api_url)
    origin, run_id = start_risky_run(api, tmp_path)
    approval = paused_approval(api, run_id)
    assert not git(origin, "ls-tree", "--name-only", "main", "risky.txt")  # not merged yet

    answer_in_the_ui(page, local_prefect, approval, "approve", "", "approve")
    assert api.wait(approval["id"], TERMINAL, timeout_s=120)[0] == "COMPLETED"  # answered

    assert api.wait(run_id, TERMINAL, timeout_s=240) == ("COMPLETED", "Completed")
    assert show(origin, "risky.txt") == "risky"
    assert "status: completed" in show(origin, "tasks/risky.md")


def test_the_reviewer_rejects_with_a_note_and_the_task_ends_blocked_with_it_on_main(
    local_prefect: LocalPrefect,  # noqa: F811
    page: Page,  # noqa: F811
    tmp_path: Path,
) -> None:
    api = Api(local_prefect.api_url)
    origin, run_id = start_risky_run(api, tmp_path)
    note = "Touches the billing path: split it and add a test first."

    approval = paused_approval(api, run_id)
    answer_in_the_ui(page, local_prefect, approval, "reject", note, "reject")
    assert api.wait(approval["id"], TERMINAL, timeout_s=120)[0] == "COMPLETED"  # answered

    assert api.wait(run_id, TERMINAL, timeout_s=240)[0] == "FAILED"
    task_file = show(origin, "tasks/risky.md")
    assert "status: blocked" in task_file
    assert note in task_file.split("## Notes", 1)[1]
    assert not git(origin, "ls-tree", "--name-only", "main", "risky.txt")
    assert git(origin, "rev-parse", "--verify", "-q", "refs/heads/tgflow/risky")  # kept
