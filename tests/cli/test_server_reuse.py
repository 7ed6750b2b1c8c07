"""`tgflow run` beside a running `tgflow server`: the run reports to it (and shows in its UI)
instead of starting a temporary server of its own, unless the record of it is stale or the
person asks for a temporary server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers.gitrepos import make_origin, show, task_md
from helpers.ports import worker_port
from helpers.processes import children, started_server

from flows.prefect_server import SERVER_RECORD
from tasks_lib.agents.process import descendants

pytestmark = pytest.mark.timeout(420)

REPO = Path(__file__).resolve().parents[2]
TGFLOW = str(Path(sys.executable).parent / "tgflow")
USING = "using the tgflow server at"


@dataclass
class Server:
    proc: subprocess.Popen[str]
    home: Path
    port: int

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


def _stop(proc: subprocess.Popen[str]) -> int:
    """Ctrl-C, as a person stops it; whatever is left after a minute is killed."""
    left = descendants({proc.pid})
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
    for pid in [proc.pid, *left]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real `tgflow server` (only the server: no deployments or worker are needed here)."""
    home = tmp_path_factory.mktemp("server-home")
    port = worker_port()
    proc, _ = started_server(
        [TGFLOW, "server", "--no-deploy", "--port", str(port), "--home", str(home),
         "--root", str(REPO)],
        env=_env(), cwd=home,
    )  # fmt: skip
    try:
        yield Server(proc, home, port)
    finally:
        _stop(proc)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra})
    return env


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    temporary_servers: int  # `prefect server start` processes the run started
    origin: Path


def _tgflow_run(tmp_path: Path, home: Path, *flags: str) -> Ran:
    """`tgflow run --json` of one scripted task, watching /proc for a temporary server (a
    child `prefect server start`, alive for seconds: polled every 50 ms)."""
    origin = make_origin(
        tmp_path,
        {"tasks/one.md": task_md("one", steps=[{"write": {"path": "one.txt", "content": "1\n"}}])},
    )
    proc = subprocess.Popen(
        [TGFLOW, "run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"),
         "--agent", "scripted", "--validate", "true", "--json", *flags],
        env=_env(PREFECT_HOME=str(home)), cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    servers: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            servers.update(children(proc.pid, b"prefect\0server\0start"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    watcher.join()
    return Ran(proc.returncode, out, err, len(servers), origin)


def _flow_runs(api: str, name: str) -> list[dict[str, object]]:
    body = {"flow_runs": {"name": {"any_": [name]}}}
    found = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30)
    found.raise_for_status()
    return list(found.json())


def test_run_reports_to_a_running_tgflow_server_and_starts_no_server_of_its_own(
    server: Server, tmp_path: Path
) -> None:
    """tgflow run finds the running tgflow server through its record in PREFECT_HOME, runs
    the flow against it (so the run shows in its UI) and starts no temporary server."""
    record = json.loads((server.home / SERVER_RECORD).read_text())
    assert record["api_url"] == server.api and record["pid"] == server.proc.pid

    ran = _tgflow_run(tmp_path, server.home)

    assert ran.returncode == 0, ran.stderr
    assert show(ran.origin, "one.txt") == "1"
    assert f"{USING} http://127.0.0.1:{server.port} (the run shows there)" in ran.stderr
    assert ran.temporary_servers == 0
    report = json.loads(ran.stdout)
    assert report["status"] == "completed"
    flow_run = report["run"].split("-", 4)[-1]  # "<date>-<time>-<flow run name>"
    runs = _flow_runs(server.api, flow_run)
    assert [r["state_type"] for r in runs] == ["COMPLETED"], runs


def test_temporary_server_flag_keeps_the_run_off_the_running_server(
    server: Server, tmp_path: Path
) -> None:
    """tgflow run --temporary-server starts a server of its own even when a tgflow server
    runs."""
    ran = _tgflow_run(tmp_path, server.home, "--temporary-server")

    assert ran.returncode == 0, ran.stderr
    assert USING not in ran.stderr
    assert ran.temporary_servers == 1


def test_a_stale_record_is_ignored_and_the_run_gets_a_temporary_server(
    server: Server, tmp_path: Path
) -> None:
    """tgflow run ignores a record whose tgflow server has died, even when something still
    answers at its address, and starts a temporary server as without one."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    home = tmp_path / "home"
    home.mkdir()
    stale = json.loads((server.home / SERVER_RECORD).read_text()) | {"pid": dead.pid}
    (home / SERVER_RECORD).write_text(json.dumps(stale))

    ran = _tgflow_run(tmp_path, home)

    assert ran.returncode == 0, ran.stderr
    assert USING not in ran.stderr
    assert ran.temporary_servers == 1


def test_a_node_pool_run_without_a_server_the_workers_reach_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    """Nodes on a pool need a server other machines reach; a temporary server is this
    process's own, so the run is refused before anything starts instead of waiting forever."""
    home = tmp_path / "home"
    home.mkdir()

    ran = _tgflow_run(tmp_path, home, "--node-pool", "tgflow-nodes")

    assert ran.returncode != 0 and ran.temporary_servers == 0
    [line] = [x for x in ran.stderr.splitlines() if "--node-pool" in x]
    assert "tgflow server" in line and "PREFECT_API_URL" in line, ran.stderr
    assert "Traceback" not in ran.stderr
    assert show(ran.origin, "tasks/one.md").count("status: pending") == 1  # nothing changed


def test_the_record_is_removed_when_the_server_stops(server: Server) -> None:
    """tgflow server removes its record when it stops, so no run looks for it any more.
    (Stops the module's server: the last test here.)"""
    assert (server.home / SERVER_RECORD).exists()

    assert _stop(server.proc) == 0

    assert not (server.home / SERVER_RECORD).exists()


def test_server_host_listens_there_and_tells_workers_and_browsers_that_address(
    tmp_path: Path,
) -> None:
    """`--host`: what other machines are given (another loopback address stands for the
    machine's network address here: the server answers on it and not on 127.0.0.1)."""
    port = worker_port()
    proc, output = started_server(
        [TGFLOW, "server", "--no-deploy", "--host", "127.0.0.2", "--port", str(port),
         "--home", str(tmp_path), "--root", str(REPO)],
        env=_env(), cwd=tmp_path,
    )  # fmt: skip
    try:
        assert f"Prefect UI: http://127.0.0.2:{port}" in output, output
        assert httpx.get(f"http://127.0.0.2:{port}/api/health", timeout=5).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
        record = json.loads((tmp_path / SERVER_RECORD).read_text())
        assert record["api_url"] == f"http://127.0.0.2:{port}/api"
    finally:
        assert _stop(proc) == 0


def test_a_run_whose_tasks_wait_for_approval_needs_a_server_with_a_ui(tmp_path: Path) -> None:
    """A temporary server has no UI to approve in: refused before anything starts, saying
    how to go on (a server, or no approval)."""
    home = tmp_path / "home"
    home.mkdir()
    risky = task_md("one", steps=[{"write": {"path": "one.txt", "content": "1\n"}}])
    origin = make_origin(
        tmp_path, {"tasks/one.md": risky.replace("status: pending", "status: pending\nrisk: high")}
    )
    argv = [TGFLOW, "run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"),
            "--agent", "scripted", "--validate", "true", "--json"]  # fmt: skip
    env = _env(PREFECT_HOME=str(home))

    refused = subprocess.run(argv, env=env, cwd=tmp_path, text=True, capture_output=True)

    assert refused.returncode != 0
    [line] = [x for x in refused.stderr.splitlines() if "approval" in x]
    assert "one would wait for approval" in line and "--no-approval" in line, refused.stderr
    assert "Traceback" not in refused.stderr
    unasked = subprocess.run([*argv, "--no-approval"], env=env, cwd=tmp_path, text=True,
                             capture_output=True)  # fmt: skip
    assert unasked.returncode == 0, unasked.stderr
    assert show(origin, "one.txt") == "1"
