"""A person's path through the Prefect UI, in headless Chromium: open the manual deployment,
start a custom run on the demo origin through the parameters form, watch it finish, and find
the task runs named after the demo's task ids and the after-action review artifact.

Screenshots go to ``screenshots/`` (git-ignored); with TGFLOW_UPDATE_DOCS=1 the run graph
also replaces ``docs/run-graph.png``, the README's picture.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.uiharness import (
    REPO,
    TERMINAL,
    Api,
    local_prefect,  # noqa: F401 (module-scoped fixture)
    require_chromium,
)
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect, sync_playwright

from flows.prefect_server import LocalPrefect
from tasks_lib.demo import build_demo_origin
from tasks_lib.graph.taskfile import load_tasks

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]
# What the page shows may take a while on a loaded machine (5 s by default): as the context's
# default for actions, 30 s (a CI run failed waiting 5 s for the run link after Submit).
expect.set_options(timeout=30_000)

SCREENSHOTS = REPO / "screenshots"
# Without the background-networking flags Chromium floods a closed network with connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    chromium = require_chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")  # empty --user-data-dir
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(30_000)
        try:
            yield context.new_page()
        finally:
            context.close()


def form_field(page: Page, label: str) -> Locator:
    """The form property whose label is exactly ``label`` (innermost, not its parent)."""
    title = page.locator(".schema-form-property__label").filter(
        has_text=re.compile(rf"^{re.escape(label)}$")
    )
    has_class = "contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')"
    return title.locator(f"xpath=ancestor::div[{has_class}][1]")


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def open_custom_run(page: Page, local: LocalPrefect, deployment: str, name: str) -> str:
    """What a person does to start a run by hand: Deployments, the deployment, Run, Custom
    run; the deployment's id (from its page's address)."""
    page.goto(f"{local.ui_url}/deployments", wait_until="networkidle")
    page.get_by_role("link", name=deployment, exact=True).first.click()
    expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible()
    deployment_id = page.url.split("/deployments/deployment/")[1].split("?")[0]
    shot(page, name)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    page.wait_for_url(re.compile(r".*/run\b.*"))
    return deployment_id


def submit_custom_run(page: Page, api: Api, deployment_id: str) -> str:
    """Press the custom-run form's Submit; the id of the flow run it made.

    Submit returns to the deployment. Its Runs tab lists runs "all except scheduled", so a
    run the worker has not picked up yet is not there: the run is found through the API.
    Prefect's SQLite server answers 503 while a burst of writes holds its database (seen
    under full load); the UI then shows an error toast and keeps the form, and a person
    clicks again.
    """
    before = {run["id"] for run in api.flow_runs_of(deployment_id)}
    refused = page.get_by_text("Something went wrong trying to create a flow run").first
    for _ in range(3):
        page.get_by_role("button", name="Submit", exact=True).click()
        deadline = time.monotonic() + 60
        while not (made := [r["id"] for r in api.flow_runs_of(deployment_id)
                            if r["id"] not in before]) and not refused.is_visible():  # fmt: skip
            assert time.monotonic() < deadline, "Submit created no flow run and showed no error"
            page.wait_for_timeout(500)
        if made:
            return made[-1]
        for close in page.get_by_role("button", name="Close").all():
            # The toast's own countdown circle lies over its Close button and takes a
            # pointer's click; the button's click event closes it (one gone already: fine).
            with contextlib.suppress(PlaywrightError):
                close.dispatch_event("click", timeout=5000)
        page.wait_for_timeout(2000)
    raise AssertionError("the UI refused the run three times")


def test_custom_run_from_the_deployment_form_runs_the_demo_graph(
    local_prefect: LocalPrefect,  # noqa: F811
    page: Page,
    tmp_path: Path,
) -> None:
    origin = build_demo_origin(tmp_path / "demo")
    task_ids = sorted(t.id for t in load_tasks(REPO / "tasks").tasks)
    api = Api(local_prefect.api_url)

    deployment_id = open_custom_run(page, local_prefect, "manual", "1-deployment")

    form_field(page, "Origin").locator("textarea").fill(str(origin))
    form_field(page, "Max Parallel (Optional)").locator("input").fill("3")
    workspace = form_field(page, "Workspace Root (Optional)")
    workspace.get_by_role("button", name="str", exact=True).click()
    workspace.locator("textarea").fill(str(tmp_path / "workspaces"))
    shot(page, "2-custom-run-form")
    run_id = submit_custom_run(page, api, deployment_id)
    page.goto(f"{local_prefect.ui_url}/runs/flow-run/{run_id}", wait_until="networkidle")
    run = api.flow_run(run_id)
    assert run["parameters"]["config"]["origin"] == str(origin)
    assert run["parameters"]["config"]["max_parallel"] == 3
    final = api.wait(run_id, TERMINAL, timeout_s=420)
    assert final == ("COMPLETED", "Completed"), (
        api.flow_run(run_id)["state"]["message"],
        run["parameters"],
    )

    page.reload(wait_until="networkidle")
    expect(page.get_by_text("Completed").first).to_be_visible()
    page.wait_for_timeout(3000)  # the graph canvas draws after the data arrives
    shot(page, "3-flow-run")
    graph = page.locator(".flow-run-graph").first
    graph.screenshot(path=str(SCREENSHOTS / "run-graph.png"))
    if os.environ.get("TGFLOW_UPDATE_DOCS") == "1":
        shutil.copy(SCREENSHOTS / "run-graph.png", REPO / "docs" / "run-graph.png")

    page.get_by_text("Task Runs", exact=True).click()
    for task_id in task_ids:
        expect(page.get_by_text(task_id, exact=True).first).to_be_visible()
    shot(page, "4-task-runs")

    page.get_by_text("Artifacts", exact=True).click()
    expect(page.get_by_text("tgflow-aar").first).to_be_visible()
    shot(page, "5-artifacts")
    page.get_by_text("tgflow-aar").first.click()
    expect(page.get_by_text(re.compile(r"^AAR: ")).first).to_be_visible()
    shot(page, "6-after-action-review")
