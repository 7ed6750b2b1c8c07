"""``tgflow server`` works from any folder: it finds tgflow's own prefect.yaml (next to the
installed packages), deploys from there, and keeps Prefect's data where PREFECT_HOME says."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers.ports import worker_port
from helpers.uiharness import FAST_ENV, REPO

from deployments.definitions import FLOW_NAME, MANUAL, MESSAGE, MESSAGE_FLOW, NIGHTLY, tgflow_root
from flows.prefect_server import LocalPrefect
from tgflow_cli.main import main


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[LocalPrefect]:
    """LocalPrefect with no processes: records the servers run_server would have started."""
    servers: list[LocalPrefect] = []
    monkeypatch.setattr(LocalPrefect, "start_server", lambda self, *a: servers.append(self))

    def ctrl_c(self: LocalPrefect) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalPrefect, "check_alive", ctrl_c)
    return servers


def test_tgflow_root_is_the_folder_with_its_prefect_yaml() -> None:
    assert tgflow_root() == REPO
    assert (tgflow_root() / "prefect.yaml").is_file()


def test_from_another_folder_it_uses_its_own_prefect_yaml_and_prefect_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[LocalPrefect]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "my-prefect"))

    assert main(["server", "--no-deploy", "--port", "1"]) == 0

    (local,) = started
    assert local.root == REPO
    assert local.home == tmp_path / "my-prefect"
    assert not (tmp_path / ".prefect").exists()


def test_home_overrides_prefect_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[LocalPrefect]
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "env-home"))

    assert main(["server", "--no-deploy", "--port", "1", "--home", str(tmp_path / "h")]) == 0

    assert started[0].home == tmp_path / "h"


def test_a_root_without_prefect_yaml_is_named_as_tgflows_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], started: list[LocalPrefect]
) -> None:
    assert main(["server", "--root", str(tmp_path), "--home", str(tmp_path / "h")]) == 1

    err = capsys.readouterr().err
    assert f"{tmp_path / 'prefect.yaml'}: cannot read tgflow's deployment file" in err
    assert "--root" in err and "project root" not in err
    assert started == []


@pytest.mark.browser
@pytest.mark.timeout(420)
def test_a_server_started_elsewhere_deploys_tgflows_flow(tmp_path: Path) -> None:
    port = worker_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "tgflow"), "server", "--port", str(port)],
        env={**os.environ, **FAST_ENV, "PREFECT_HOME": str(tmp_path / "home")},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        out = []
        for line in server.stdout:
            out.append(line)
            if "Ctrl-C stops" in line:
                break
        assert "Ctrl-C stops" in "".join(out), "".join(out)
        api = f"http://127.0.0.1:{port}/api"
        for flow, name in ((FLOW_NAME, MANUAL), (FLOW_NAME, NIGHTLY), (MESSAGE_FLOW, MESSAGE)):
            found = httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=10)
            assert found.status_code == 200, found.text
            steps = found.json()["pull_steps"]  # where the worker runs the flow from
            assert steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
            ], steps
        assert (tmp_path / "home").is_dir()
        assert not (tmp_path / ".prefect").exists()
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=90) == 0
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=60)
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
