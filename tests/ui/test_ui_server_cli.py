"""``tgflow server``'s own process handling and error messages, without a real Prefect server."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from flows import prefect_server as server
from flows.prefect_server import LocalPrefect
from tgflow_cli.main import main

MANUAL_ONLY = """\
deployments:
  - name: manual
    entrypoint: flow.py:run
    work_pool: {name: pool}
"""


def project(tmp_path: Path, text: str = MANUAL_ONLY) -> Path:
    (tmp_path / "flow.py").write_text("def run(): pass\n")
    (tmp_path / "prefect.yaml").write_text(text)
    return tmp_path


def serve(root: Path) -> int:
    """``tgflow server`` as a terminal runs it, on a port no server is started on."""
    return main(["server", "--root", str(root), "--home", str(root / "home"), "--port", "1"])


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """LocalPrefect with no processes: records what run_server asked of it; the wait loop
    ends as a Ctrl-C would."""
    calls: list[str] = []
    for name in ("start_server", "deploy", "start_workers"):
        monkeypatch.setattr(LocalPrefect, name, lambda self, *a, n=name, **k: calls.append(n))

    def paused(self, deployment, paused, flow="tgflow"):
        calls.append(f"set_paused {deployment}")

    def ctrl_c(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalPrefect, "set_paused", paused)
    monkeypatch.setattr(LocalPrefect, "check_alive", ctrl_c)
    return calls


def test_a_project_without_the_nightly_deployment_starts_without_pausing_it(
    tmp_path: Path, offline: list[str]
):
    assert serve(project(tmp_path)) == 0
    assert offline == ["start_server", "deploy", "start_workers"]


def test_an_api_error_while_setting_up_is_one_line_not_a_traceback(
    tmp_path: Path, offline: list[str], monkeypatch: pytest.MonkeyPatch, capsys
):
    def refused(self):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(LocalPrefect, "deploy", refused)

    assert serve(project(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "tgflow server:" in err and "Connection refused" in err
    assert "Traceback" not in err


def test_a_second_ctrl_c_while_stopping_does_not_leave_processes_behind(tmp_path: Path):
    local = LocalPrefect(root=tmp_path, home=tmp_path / "home")
    # A server slow to stop: it ignores SIGTERM, so stop() waits its grace, then SIGKILLs.
    proc = local._spawn("server", ["sh", "-c", "trap '' TERM; sleep 60 & wait"], tmp_path)
    time.sleep(0.3)
    pgid = os.getpgid(proc.pid)
    threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGINT)).start()

    try:
        local.stop(grace_s=2.0)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait()

    assert not interrupted, "the second Ctrl-C broke off stopping"
    assert not server.group_alive(pgid)


def test_a_prefect_command_that_hangs_is_a_server_error(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(LocalPrefect, "prefect", lambda self, *a: ["sleep", "30"])
    local = LocalPrefect(root=tmp_path, home=tmp_path / "home")

    with pytest.raises(server.ServerError, match=r"did not finish in 0\.5 s"):
        local.run_cli("deploy", "deploy", "--all", timeout_s=0.5)
