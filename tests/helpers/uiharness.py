"""What the UI tests share: a real local Prefect (via ``tgflow server``'s own code), the API
calls the UI's buttons make, demo origins with small task graphs, and process checks.

The Retry and Cancel calls are copied from the UI bundle Prefect ships
(``prefect/server/ui/assets/index-*.js``): ``retryFlowRun`` posts
``{state: {type: scheduled, name: AwaitingRetry, message: "Retry from the UI"}}`` with
``force: false``; the Cancel modal posts ``{state: {type: cancelling, name: Cancelling}}``
with ``force: true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.definitions import NIGHTLY
from flows.prefect_server import LocalPrefect, api_client
from helpers.ports import worker_port
from tasks_lib.agents.process import group_alive

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}

# Fast polling so tests wait seconds, not minutes: the worker looks for runs every 2 s, the
# server's scheduler every 5 s.
FAST_ENV = {
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
}


def require_chromium() -> Path:
    """Debian's chromium; missing is a failure in CI (CI=true) and a skip elsewhere."""
    if CHROMIUM.is_file():
        return CHROMIUM
    message = f"{CHROMIUM} not found: run scripts/install-browser.sh (make test does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def start_local_prefect(home: Path, *, prefect_file: str = "prefect.yaml") -> LocalPrefect:
    """Server + deployments + worker for the repository's flow; the caller stops it."""
    local = LocalPrefect(
        root=REPO,
        home=home,
        port=worker_port(),
        extra_env=dict(FAST_ENV),
        prefect_file=prefect_file,
    )
    try:
        local.start_server()
        local.deploy()
        local.set_paused(NIGHTLY, True)  # no origin here; and 02:00 may fall in a test run
        local.start_workers()
    except BaseException:
        local.stop()
        raise
    return local


@pytest.fixture(scope="module")
def local_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefect]:
    local = start_local_prefect(tmp_path_factory.mktemp("prefect-home"))
    with local:
        yield local


class Api:
    """The handful of REST calls the tests (and the UI) make."""

    def __init__(self, base: str) -> None:
        self.http = api_client(base)

    def deployment(self, flow: str, name: str) -> dict[str, Any]:
        return self.ok(self.http.get(f"/deployments/name/{flow}/{name}"))

    def run_deployment(self, deployment_id: str, parameters: dict[str, Any]) -> str:
        run = self.ok(
            self.http.post(
                f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters}
            )
        )
        return str(run["id"])

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return self.ok(self.http.get(f"/flow_runs/{run_id}"))

    def state(self, run_id: str) -> tuple[str, str]:
        state = self.flow_run(run_id)["state"]
        return state["type"], state["name"]

    def wait(self, run_id: str, types: set[str], timeout_s: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state(run_id)
            if state[0] in types:
                return state
            time.sleep(1.0)
        raise AssertionError(f"flow run {run_id} still {self.state(run_id)} after {timeout_s} s")

    def task_runs(self, run_id: str) -> list[dict[str, Any]]:
        body = {"flow_runs": {"id": {"any_": [run_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return self.ok(self.http.post("/task_runs/filter", json=body))

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        body = {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
        return self.ok(self.http.post("/artifacts/filter", json=body))

    def flow_runs_of(self, deployment_id: str) -> list[dict[str, Any]]:
        body = {
            "deployments": {"id": {"any_": [deployment_id]}},
            "sort": "EXPECTED_START_TIME_ASC",
        }
        return self.ok(self.http.post("/flow_runs/filter", json=body))

    def retry(self, run_id: str) -> dict[str, Any]:
        """The UI's Retry button."""
        state = {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}
        return self.ok(
            self.http.post(f"/flow_runs/{run_id}/set_state", json={"state": state, "force": False})
        )

    def cancel(self, run_id: str) -> dict[str, Any]:
        """The UI's Cancel button."""
        state = {"type": "CANCELLING", "name": "Cancelling"}
        return self.ok(
            self.http.post(f"/flow_runs/{run_id}/set_state", json={"state": state, "force": True})
        )

    @staticmethod
    def ok(response: httpx.Response) -> Any:
        if response.is_error:
            raise AssertionError(f"{response.request.url}: {response.status_code} {response.text}")
        return response.json()


def task_file(task_id: str, *, depends_on: list[str], script: str) -> str:
    """A task file whose scripted agent runs ``script`` (a YAML list of steps)."""
    deps = "[" + ", ".join(depends_on) + "]"
    return (
        f"---\nid: {task_id}\nname: {task_id} demo step\nstatus: pending\n"
        f"depends_on: {deps}\nscope: narrow\nrisk: low\n---\n\n## Description\n\n"
        f"Demo step {task_id}.\n\n```tgflow-script\n{textwrap.dedent(script).strip()}\n```\n"
    )


def counting_script(marks: Path, task_id: str, *extra: str) -> str:
    """Steps that record the session (one line per agent session) and its process group."""
    name = task_id.replace("/", "-")
    lines = [
        f'- run: "echo session >> {marks}/{name}.sessions"',
        # written aside and moved in: a reader never sees the file empty (the shell creates it
        # before python has started, seconds before on a loaded machine)
        f"- run: \"python3 -c 'import os; print(os.getpgrp())' > {marks}/{name}.tmp"
        f' && mv {marks}/{name}.tmp {marks}/{name}.pgid"',
        f'- write: {{path: "out/{name}.txt", content: "{task_id} done\\n"}}',
        *extra,
    ]
    return "\n".join(lines)


def sessions(marks: Path, task_id: str) -> int:
    path = marks / f"{task_id.replace('/', '-')}.sessions"
    return len(path.read_text().splitlines()) if path.exists() else 0


def build_origin(dest: Path, tasks: dict[str, str]) -> Path:
    """A demo origin (``build_demo_origin``) whose tasks/ holds ``{relative path: text}``."""
    from tasks_lib.demo import build_demo_origin

    tasks_dir = dest / "tasks-src"
    for rel, text in tasks.items():
        (tasks_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (tasks_dir / rel).write_text(text)
    origin = build_demo_origin(dest / "demo", tasks_dir=tasks_dir)
    shutil.rmtree(tasks_dir)
    # The scripts mark sessions and process groups (host pids) beside the repository, where
    # a sandbox would not let them write: what a sandbox ends is tests/faults' to prove.
    commit_to_origin(
        origin, {".tgflow.toml": lambda text: text + 'sandbox = "none"\n'}, "test: no sandbox"
    )
    return origin


def commit_to_origin(origin: Path, edits: dict[str, Callable[[str], str]], message: str) -> None:
    """Edit files on the origin's main the way a user would: clone, edit, commit, push.

    ``edits`` maps a path to a function from its current text ("" if new) to the new text.
    """
    work = origin.parent / f"edit-{time.monotonic_ns()}"
    ident = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
    for rel, edit in edits.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(edit(path.read_text() if path.exists() else ""))
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(["git", *ident, "commit", "-q", "-m", message], cwd=work, check=True)
    subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=work, check=True)
    shutil.rmtree(work)


def live_group(pgid_file: Path) -> bool:
    return pgid_file.exists() and group_alive(int(pgid_file.read_text().split()[0]))
