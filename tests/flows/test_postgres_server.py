"""A Prefect server on a private Postgres (flows/postgres.py): real Debian Postgres on a free
port with its own data dir, a real Prefect server on it, and nothing left running or on disk
afterwards unless the data dir was the caller's; ``tgflow server --postgres`` end to end."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs; ships with Prefect
import httpx
import pytest
from helpers.ports import worker_port

from flows.postgres import PostgresError, PostgresServer, local_postgres, postgres_problem
from flows.prefect_server import HOST, LocalPrefect, api_client
from tasks_lib.agents.process import descendants, pid_alive

pytestmark = pytest.mark.timeout(420)

REPO = Path(__file__).resolve().parents[2]
TGFLOW = str(Path(sys.executable).parent / "tgflow")


@pytest.fixture(autouse=True)
def _postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem} (CI must install Postgres: make tools)")
    pytest.skip(problem)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder the ``postgres`` user can reach (as root Postgres runs as that user, and
    pytest's tmp_path sits below a folder only root may enter)."""
    folder = Path(tempfile.mkdtemp(prefix="tgflow-pg-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fetch(server: PostgresServer, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql``, over TCP with the URL Prefect is given (asyncpg, as Prefect does)."""

    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(server.url.replace("+asyncpg", ""))
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(go())


def cluster_processes(server: PostgresServer) -> set[int]:
    """The postmaster and the processes it runs (checkpointer, one backend per client ...)."""
    return {server.pid, *descendants({server.pid})}


def answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def test_a_prefect_server_on_a_private_postgres_keeps_its_rows_there_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    home = tmp_path / "prefect-home"
    with local_postgres() as pg:
        local = LocalPrefect(
            root=tmp_path,
            home=home,
            port=worker_port(),
            extra_env={"PREFECT_SERVER_UI_ENABLED": "false"},
            database_url=pg.url,
        )
        with local:
            local.start_server()
            with api_client(local.api_url) as api:
                assert api.get("/health").status_code == 200
                made = api.post("/v2/concurrency_limits/", json={"name": "merge", "limit": 1})
                assert made.status_code == 201, made.text
            rows = fetch(pg, 'SELECT name, "limit" FROM concurrency_limit_v2')
            assert rows == [("merge", 1)]
            running = cluster_processes(pg)
            assert len(running) > 1  # the server's connections are backends of this cluster
        assert not list(home.glob("*.db")), "the Prefect server made a SQLite database"
        data_dir = pg.data_dir
        assert (data_dir / "cluster" / "PG_VERSION").is_file()

    assert not [pid for pid in running if pid_alive(pid)], "a Postgres process is left"
    assert not answers(pg.port)
    assert not data_dir.exists(), "the temporary data dir is left"


def test_a_kept_data_dir_has_the_earlier_rows_on_the_next_start(open_dir: Path) -> None:
    data_dir = open_dir / "postgres"
    with local_postgres(data_dir) as first:
        fetch(first, "CREATE TABLE runs (name text)")
        fetch(first, "INSERT INTO runs VALUES ('nightly')")
    with local_postgres(data_dir) as second:
        assert fetch(second, "SELECT name FROM runs") == [("nightly",)]
        # A new password each start: the first one no longer opens the database.
        with pytest.raises(asyncpg.InvalidPasswordError):
            fetch(dataclasses.replace(second, password=first.password), "SELECT 1")
    assert not pid_alive(second.pid)
    assert (data_dir / "cluster" / "PG_VERSION").is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs Postgres as another user")
def test_a_data_dir_the_postgres_user_cannot_reach_is_one_line_saying_so(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    with pytest.raises(PostgresError) as caught, local_postgres(tmp_path / "postgres"):
        pass
    message = str(caught.value)
    assert "cannot reach" in message and str(tmp_path / "postgres") in message
    assert "\n" not in message


def test_tgflow_server_postgres_runs_prefect_on_postgres_in_its_home_until_ctrl_c(
    open_dir: Path,
) -> None:
    port = worker_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.Popen(
        [TGFLOW, "server", "--postgres", "--no-deploy", "--port", str(port),
         "--home", str(open_dir), "--root", str(REPO)],
        env={**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}, cwd=open_dir,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "Ctrl-C stops" in line:
                break
        assert proc.poll() is None, "".join(seen)
        api = f"http://{HOST}:{port}/api"
        made = httpx.post(f"{api}/v2/concurrency_limits/", json={"name": "merge", "limit": 1})
        assert made.status_code == 201, made.text
        postmaster = int(
            (open_dir / "postgres" / "cluster" / "postmaster.pid").read_text().split()[0]
        )
        running = {postmaster, *descendants({postmaster})}
        assert not list(open_dir.glob("*.db")), "the Prefect server made a SQLite database"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(seen) + rest
    assert proc.returncode == 0, output
    assert "Postgres" in output
    assert not [pid for pid in running if pid_alive(pid)], "a Postgres process is left"
    assert not answers(port)
    assert (open_dir / "postgres" / "cluster" / "PG_VERSION").is_file()  # kept for the next run
