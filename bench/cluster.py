"""Several "machines" on this one: a Prefect server on a private Postgres, and workers that
share nothing with each other or with the run (each its own HOME, PREFECT_HOME and temporary
folder, so its own clones of the origin), for the node-pool test and benchmark.

Two workers on one host with homes of their own are two machines to tgflow: all a node run
shares with the others is the origin and the Prefect API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.definitions import tgflow_root
from flows.node_flow import NODE_FLOW
from flows.postgres import local_postgres
from flows.prefect_server import LocalPrefect, api_client, free_port
from tasks_lib.run.records import NodeRecord

QUERY_S = "2"  # how often a worker asks for runs (Prefect's default: 10 s)


@contextmanager
def prefect_on_postgres(home: Path) -> Iterator[LocalPrefect]:
    with local_postgres() as pg:
        local = LocalPrefect(
            root=tgflow_root(),
            home=home,
            port=free_port(),
            extra_env={"PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
            database_url=pg.url,
        )
        with local:
            local.start_server()
            yield local


@dataclass
class Machine:
    """A worker on a "machine" of its own."""

    name: str
    home: Path  # its HOME
    proc: subprocess.Popen[bytes]

    def kill(self) -> None:
        """The machine dies: its worker and every process of its node runs, at once."""
        for pid in self.processes():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def processes(self) -> list[int]:
        """Its worker and whatever runs with its HOME (node runs are sessions of their own,
        agents too: no process group or parent link finds them all)."""
        found = [self.proc.pid]
        marker = f"HOME={self.home}\0".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.proc.pid:
                continue
            try:
                if marker in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found


@contextmanager
def machines(
    server: LocalPrefect, pool: str, root: Path, count: int, limit: int
) -> Iterator[list[Machine]]:
    """``count`` workers on ``pool``, each taking at most ``limit`` node runs at once;
    stopped (Ctrl-C, then killed) when the block ends."""
    started: list[Machine] = []
    try:
        for n in range(1, count + 1):
            folder = root / f"machine-{n}"
            for sub in ("home", "prefect", "tmp"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
                "HOME": str(folder / "home"),
                "PREFECT_HOME": str(folder / "prefect"),
                "TMPDIR": str(folder / "tmp"),
                "PREFECT_API_URL": server.api_url,
                "PREFECT_WORKER_QUERY_SECONDS": QUERY_S,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            }
            log = (folder / "worker.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                 "--type", "process", "--limit", str(limit), "--name", f"machine-{n}"],
                env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            log.close()
            started.append(Machine(f"machine-{n}", folder / "home", proc))
        yield started
    finally:
        for machine in started:
            if machine.proc.poll() is None:
                machine.proc.send_signal(signal.SIGINT)
        for machine in started:
            try:
                machine.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                machine.kill()


def node_runs(api_url: str, origin: Path) -> list[dict[str, Any]]:
    """The node flow runs of runs on ``origin``, oldest first, as the API has them."""
    body = {"flows": {"name": {"any_": [NODE_FLOW]}}, "sort": "EXPECTED_START_TIME_ASC"}
    with api_client(api_url) as api:
        found = api.post("/flow_runs/filter", json=body)
        found.raise_for_status()
    runs: list[dict[str, Any]] = found.json()
    return [r for r in runs if r["parameters"]["config"]["origin"] == str(origin)]


def node_record(run: dict[str, Any]) -> NodeRecord:
    """The record a node run ended with (its final state's message)."""
    return NodeRecord.model_validate_json(run["state"]["message"])
