"""The deployments against a real local Prefect server and process worker, driven through
the same API calls the UI's buttons make: registration, Cancel, Retry, and the scheduler.

One server, one worker for the whole module (``tgflow server``'s own code starts them).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.uiharness import (
    TERMINAL,
    Api,
    build_origin,
    commit_to_origin,
    counting_script,
    live_group,
    local_prefect,  # noqa: F401 (module-scoped fixture)
    sessions,
    task_file,
)

from deployments.definitions import FLOW_NAME, MANUAL, NIGHTLY, load_project
from flows.prefect_server import LocalPrefect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def api(local_prefect: LocalPrefect) -> Api:  # noqa: F811
    return Api(local_prefect.api_url)


def run_params(origin: Path, tmp: Path, **config: Any) -> dict[str, Any]:
    return {
        "config": {
            "origin": str(origin),
            "workspace_root": str(tmp / "workspaces"),
            "agent": "scripted",
            "validate_commands": ["true"],
            "retries": 0,
            **config,
        }
    }


def task_names(api: Api, run_id: str) -> dict[str, str]:
    """Task run name → state name."""
    return {t["name"]: t["state"]["name"] for t in api.task_runs(run_id)}


def test_prefect_yaml_registers_manual_and_nightly_on_the_process_pool(api: Api) -> None:
    for name in (MANUAL, NIGHTLY):
        deployment = api.deployment(FLOW_NAME, name)
        assert deployment["work_pool_name"] == "tgflow-process"
        assert deployment["entrypoint"] == "flows/graph_flow.py:tgflow_run"
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        assert "config" in deployment["parameter_openapi_schema"]["properties"]
    nightly = api.deployment(FLOW_NAME, NIGHTLY)
    [schedule] = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *"


def test_cancel_from_the_ui_ends_the_run_cancelled_and_kills_the_agent(
    api: Api, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    origin = build_origin(
        tmp_path,
        {
            "slow.md": task_file(
                "slow", depends_on=[], script=counting_script(marks, "slow", "- hang: true")
            )
        },
    )
    manual = api.deployment(FLOW_NAME, MANUAL)
    run_id = api.run_deployment(manual["id"], run_params(origin, tmp_path))

    deadline = time.monotonic() + 180
    while not (marks / "slow.pgid").exists():
        assert time.monotonic() < deadline, f"agent never started: {api.state(run_id)}"
        assert api.state(run_id)[0] not in TERMINAL, api.state(run_id)
        time.sleep(0.5)
    time.sleep(1.0)  # let the agent reach its `hang` step
    assert live_group(marks / "slow.pgid")

    api.cancel(run_id)
    assert api.wait(run_id, TERMINAL, timeout_s=120) == ("CANCELLED", "Cancelled")
    assert not live_group(marks / "slow.pgid"), "an agent process survived the cancellation"


def test_retry_from_the_ui_reruns_only_the_failed_node_and_its_descendants(
    api: Api, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    def node(task_id: str, deps: list[str], *extra: str) -> str:
        return task_file(task_id, depends_on=deps, script=counting_script(marks, task_id, *extra))

    origin = build_origin(
        tmp_path,
        {
            "a.md": node("a", []),
            "b.md": node("b", ["a"], '- fail: "b needs a fix"'),
            "c.md": node("c", ["b"]),
            "d.md": node("d", []),
        },
    )
    manual = api.deployment(FLOW_NAME, MANUAL)
    run_id = api.run_deployment(manual["id"], run_params(origin, tmp_path))
    assert api.wait(run_id, TERMINAL, timeout_s=240)[0] == "FAILED"
    assert {t: sessions(marks, t) for t in "abcd"} == {"a": 1, "b": 1, "c": 0, "d": 1}

    # The cause fixed on the origin, as a user would: drop the failing step from b's script.
    commit_to_origin(
        origin,
        {"tasks/b.md": lambda text: re.sub(r"^- fail: .*\n", "", text, flags=re.M)},
        "b: fix the script",
    )
    api.retry(run_id)
    assert api.wait(run_id, TERMINAL, timeout_s=240)[0] == "COMPLETED"
    assert {t: sessions(marks, t) for t in "abcd"} == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert api.flow_run(run_id)["run_count"] == 2


def test_scheduled_runs_each_find_only_the_work_that_is_left(
    local_prefect: LocalPrefect,  # noqa: F811
    api: Api,
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    def node(task_id: str, deps: list[str]) -> str:
        return task_file(task_id, depends_on=deps, script=counting_script(marks, task_id))

    origin = build_origin(tmp_path, {"a.md": node("a", []), "b.md": node("b", ["a"])})
    # The nightly deployment as prefect.yaml declares it, with a short interval schedule.
    project = yaml.safe_load((local_prefect.root / "prefect.yaml").read_text())
    nightly = next(d for d in project["deployments"] if d["name"] == NIGHTLY)
    nightly.update(
        name="every-20s",
        schedules=[{"interval": 20, "active": True}],
        parameters=run_params(origin, tmp_path),
    )
    project["deployments"] = [nightly]
    variant = tmp_path / "prefect-every-20s.yaml"
    variant.write_text(yaml.safe_dump(project))
    assert load_project(local_prefect.root, str(variant)).deployment("every-20s")
    local_prefect.prefect_file = str(variant)
    try:
        local_prefect.deploy()
    finally:
        local_prefect.prefect_file = "prefect.yaml"
    deployment = api.deployment(FLOW_NAME, "every-20s")

    def finished_runs() -> list[dict[str, Any]]:
        return [r for r in api.flow_runs_of(deployment["id"]) if r["state_type"] in TERMINAL]

    try:
        deadline = time.monotonic() + 240
        while not finished_runs():
            assert time.monotonic() < deadline, "no scheduled run finished"
            time.sleep(2)
        assert {t: sessions(marks, t) for t in "ab"} == {"a": 1, "b": 1}
        # New work lands on the origin between scheduled runs.
        commit_to_origin(origin, {"tasks/c.md": lambda _: node("c", ["b"])}, "add task c")
        while sessions(marks, "c") == 0 or len(finished_runs()) < 2:
            assert time.monotonic() < deadline, f"c never ran: {finished_runs()}"
            time.sleep(2)
    finally:
        paused = api.http.patch(f"/deployments/{deployment['id']}", json={"paused": True})
        assert paused.status_code == 204, paused.text
        for run in api.flow_runs_of(deployment["id"]):
            if run["state_type"] == "SCHEDULED":
                api.http.delete(f"/flow_runs/{run['id']}")
    runs = finished_runs()
    assert all(r["auto_scheduled"] for r in runs)
    assert all(r["state_type"] == "COMPLETED" for r in runs), [r["state_name"] for r in runs]
    # Every task had exactly one agent session over all the scheduled runs.
    assert {t: sessions(marks, t) for t in "abc"} == {"a": 1, "b": 1, "c": 1}
    # The first run did a and b; the run that did c found a and b already done.
    assert task_names(api, runs[0]["id"]).keys() >= {"a", "b"}


def test_agent_keys_come_from_secret_blocks_when_the_environment_lacks_them(
    local_prefect: LocalPrefect,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.secrets import block_name, export_secrets

    monkeypatch.delenv("TGFLOW_TEST_KEY", raising=False)
    monkeypatch.setenv("TGFLOW_TEST_SET", "from-env")
    with temporary_settings({PREFECT_API_URL: local_prefect.api_url}):
        Secret(value="s3cr3t").save(block_name("TGFLOW_TEST_KEY"), overwrite=True)
        Secret(value="ignored").save(block_name("TGFLOW_TEST_SET"), overwrite=True)
        loaded = export_secrets(["TGFLOW_TEST_KEY", "TGFLOW_TEST_SET", "TGFLOW_TEST_NONE"])
    assert loaded == ["TGFLOW_TEST_KEY"]
    assert os.environ["TGFLOW_TEST_KEY"] == "s3cr3t"
    assert os.environ["TGFLOW_TEST_SET"] == "from-env"  # the environment wins
    assert "TGFLOW_TEST_NONE" not in os.environ
