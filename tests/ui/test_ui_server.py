"""``tgflow server`` as a user runs it: one command brings up the server, the deployments and
a worker and prints the UI address; Ctrl-C while an agent works stops every process it
started, the agent included."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers.ports import worker_port
from helpers.uiharness import (
    FAST_ENV,
    REPO,
    Api,
    build_origin,
    counting_script,
    live_group,
    task_file,
)

from deployments.definitions import FLOW_NAME, MANUAL, NIGHTLY
from tasks_lib.agents.process import descendants

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]


def read_until(proc: subprocess.Popen[str], needle: str, timeout_s: float) -> str:
    """The command's output up to the first line containing ``needle``."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=1.0))
        except queue.Empty:
            continue
        if needle in seen[-1]:
            return "".join(seen)
    raise AssertionError(f"no {needle!r} in the output:\n{''.join(seen)}")


def test_one_command_serves_the_ui_and_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    origin = build_origin(
        tmp_path,
        {"slow.md": task_file("slow", depends_on=[], script=counting_script(
            marks, "slow", "- hang: true"))},
    )  # fmt: skip
    port = worker_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "tgflow"), "server", "--port", str(port),
         "--home", str(tmp_path / "prefect-home"), "--root", str(REPO), "--origin", str(origin)],
        env={**os.environ, **FAST_ENV}, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out = read_until(server, "Ctrl-C stops", timeout_s=240)
        ui = f"http://127.0.0.1:{port}"
        assert f"Prefect UI: {ui}" in out
        assert f"nightly: runs on {origin}" in out
        assert httpx.get(ui, timeout=10).status_code == 200
        api = Api(f"{ui}/api")
        nightly = api.deployment(FLOW_NAME, NIGHTLY)
        assert nightly["parameters"]["config"]["origin"] == str(origin)
        assert nightly["paused"] is False

        manual = api.deployment(FLOW_NAME, MANUAL)
        config = {"origin": str(origin), "workspace_root": str(tmp_path / "ws"), "retries": 0,
                  "agent": "scripted", "validate_commands": ["true"]}  # fmt: skip
        run_id = api.run_deployment(manual["id"], {"config": config})
        deadline = time.monotonic() + 180
        while not (marks / "slow.pgid").exists():
            assert time.monotonic() < deadline, f"the agent never started: {api.state(run_id)}"
            time.sleep(0.5)
        time.sleep(1.0)
        started = descendants({server.pid})
        assert live_group(marks / "slow.pgid")

        server.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal does
        assert server.wait(timeout=90) == 0
    finally:
        if server.poll() is None:  # the test failed: stop the tree, sessions of its own too
            left = descendants({server.pid})
            server.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=60)
            for pid in [server.pid, *left]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert not live_group(marks / "slow.pgid"), "the agent outlived tgflow server"
    survivors = [pid for pid in started if Path(f"/proc/{pid}").exists()]
    assert survivors == [], f"processes left behind: {survivors}"
