"""`tgflow server --notify-webhook URL`: a person hears of a failed run, a blocked node and an
approval that waits, through Prefect automations the server runs and a webhook block, on a
real `tgflow server` and a real HTTP receiver standing in for the chat's webhook."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers.gitrepos import make_origin, task_md
from helpers.ports import worker_port
from helpers.processes import started_server

from flows.notifications import APPROVAL_WAITS, BLOCK, NODE_BLOCKED, RUN_FAILED
from flows.prefect_server import api_client

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
TGFLOW = str(Path(sys.executable).parent / "tgflow")
DELIVERY_S = (
    120.0  # an automation fires on the server's event stream: seconds, on a busy machine more
)


@dataclass
class Receiver:
    """A webhook: every JSON body POSTed to /hook, in order."""

    url: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first message ``wanted`` accepts, waiting for it until DELIVERY_S has passed."""
        deadline = time.monotonic() + DELIVERY_S
        with self.arrived:
            while True:
                found = [m for m in self.messages if wanted(m)]
                left = deadline - time.monotonic()
                if found or left <= 0:
                    assert found, f"no such message within {DELIVERY_S:g} s: {self.messages}"
                    return found[0]
                self.arrived.wait(timeout=left)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    port = worker_port()
    got = Receiver(url=f"http://127.0.0.1:{port}/hook")

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with got.arrived:
                got.messages.append({"path": self.path, **body})
                got.arrived.notify_all()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:  # not on the test's output
            pass

    http = ThreadingHTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        yield got
    finally:
        http.shutdown()
        http.server_close()


@dataclass
class Server:
    proc: subprocess.Popen[str]
    home: Path
    port: int
    started: str  # what it printed until "Ctrl-C stops"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "TGFLOW_NOTIFY_WEBHOOK")
    }
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra})
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("server-home")
    port = worker_port()
    proc, started = started_server(
        [TGFLOW, "server", "--no-deploy", "--port", str(port), "--home", str(home),
         "--root", str(REPO), "--notify-webhook", receiver.url],
        env=_env(), cwd=home,
    )  # fmt: skip
    try:
        yield Server(proc, home, port, started)
    finally:
        proc.terminate()  # SIGTERM: a clean stop, like Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _automations(server: Server, name: str) -> list[dict[str, Any]]:
    with api_client(server.api) as api:
        found = api.post("/automations/filter", json={"automations": {"name": {"any_": [name]}}})
    found.raise_for_status()
    return list(found.json())


def _blocks(server: Server) -> list[dict[str, Any]]:
    """The webhook blocks, as the API shows them to anyone (the UI, say)."""
    with api_client(server.api) as api:
        found = api.post(
            "/block_documents/filter", json={"block_documents": {"name": {"any_": [BLOCK]}}}
        )
    found.raise_for_status()
    return list(found.json())


def test_server_sets_up_the_notifications_before_it_says_it_is_ready(
    server: Server, receiver: Receiver
) -> None:
    """Said once before the 'Ctrl-C stops' line that tells a person, or a script, that the
    server is ready; the URL is not shown, there or in the block (a chat webhook's URL is
    its credential)."""
    [said] = [line for line in server.started.splitlines() if line.startswith("notifications:")]
    assert RUN_FAILED in said and NODE_BLOCKED in said and APPROVAL_WAITS in said
    assert receiver.url not in server.started
    for name in (RUN_FAILED, NODE_BLOCKED, APPROVAL_WAITS):
        [automation] = _automations(server, name)
        assert automation["enabled"]
    [block] = _blocks(server)
    assert receiver.url not in json.dumps(block)


def test_a_failed_run_is_sent_to_the_webhook_with_its_state_and_page(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    origin = make_origin(tmp_path, {"tasks/one.md": task_md("one", steps=[{"fail": "no way"}])})
    ran = subprocess.run(
        [TGFLOW, "run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"),
         "--agent", "scripted", "--validate", "true", "--retries", "0", "--json"],
        env=_env(PREFECT_HOME=str(server.home)), cwd=tmp_path, text=True, capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert ran.returncode != 0, ran.stdout
    flow_run = json.loads(ran.stdout)["run"].split("-", 4)[-1]  # "<date>-<time>-<flow run>"

    message = receiver.wait_for(lambda m: flow_run in m["subject"])

    assert message["path"] == "/hook"
    assert message["subject"] == f"tgflow run {flow_run} Failed"
    assert "1 of 1 nodes did not complete (1 failed): one" in message["body"]
    assert f"http://127.0.0.1:{server.port}/runs/flow-run/" in message["body"]
    assert message["text"] == f"{message['subject']}\n{message['body']}"


def _run(server: Server, tmp_path: Path, task: str) -> subprocess.Popen[str]:
    """`tgflow run` of one task file, reporting to the server."""
    origin = make_origin(tmp_path, {"tasks/one.md": task})
    return subprocess.Popen(
        [TGFLOW, "run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"),
         "--agent", "scripted", "--validate", "true", "--retries", "0", "--json"],
        env=_env(PREFECT_HOME=str(server.home)), cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_a_blocked_node_is_sent_with_its_task_and_reason(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    reason = "the task needs the staging database's password, which I do not have"
    proc = _run(server, tmp_path, task_md("db-migrate", steps=[{"block": reason}]))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out

    message = receiver.wait_for(lambda m: "db-migrate" in m["subject"])

    assert message["subject"] == "tgflow: node db-migrate is blocked"
    assert f"is blocked: {reason}" in message["body"]
    assert f"http://127.0.0.1:{server.port}/runs/flow-run/" in message["body"]


def test_a_waiting_approval_is_sent_with_the_page_that_resumes_it(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    """A risky task's branch waits for approval; the link in the message is the page of the
    paused approval: answering there lets the run merge it."""
    risky = task_md("risky", steps=[{"write": {"path": "r.txt", "content": "r\n"}}])
    proc = _run(server, tmp_path, risky.replace("status: pending", "status: pending\nrisk: high"))
    try:
        message = receiver.wait_for(lambda m: "waits for approval" in m["subject"])
        assert message["subject"] == "tgflow: approve risky waits for approval", message
        assert "is Paused" in message["body"], message
        link = re.search(
            rf"http://127\.0\.0\.1:{server.port}/runs/flow-run/([0-9a-f-]+)", message["body"]
        )
        assert link, message
        with api_client(server.api) as api:
            resumed = api.post(
                f"/flow_runs/{link[1]}/resume", json={"run_input": {"decision": "approve"}}
            )
        resumed.raise_for_status()
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_setting_up_again_replaces_the_webhook_and_adds_nothing(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    """As a server started again on the same database with another webhook: one block and one
    automation per case, still, and the messages go to the new webhook. (Changes the
    module's webhook: the last of the server's tests.)"""
    from flows.notifications import ensure_notifications
    from flows.prefect_server import reporting_to

    with reporting_to(server.api):
        ensure_notifications(receiver.url.replace("/hook", "/new-hook"))

    for name in (RUN_FAILED, NODE_BLOCKED, APPROVAL_WAITS):
        assert len(_automations(server, name)) == 1, name
    assert len(_blocks(server)) == 1
    proc = _run(server, tmp_path, task_md("after-the-change", steps=[{"block": "still blocked"}]))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out  # blocked
    message = receiver.wait_for(lambda m: "after-the-change" in m["subject"])
    assert message["path"] == "/new-hook"


def test_a_webhook_that_is_not_a_url_is_refused_in_one_line_before_anything_starts(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [TGFLOW, "server", "--no-deploy", "--port", str(worker_port()), "--home", str(tmp_path),
         "--root", str(REPO)],
        env=_env(TGFLOW_NOTIFY_WEBHOOK="hooks.slack.com/services/T0/B0/x"), cwd=tmp_path,
        text=True, capture_output=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "TGFLOW_NOTIFY_WEBHOOK" in line and "https://" in line
    assert not (tmp_path / "logs").exists()  # no server was started
