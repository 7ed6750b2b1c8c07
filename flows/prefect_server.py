"""Local Prefect servers: the one way tgflow starts one, for ``tgflow server`` (the server, the
deployments and a worker) and for a terminal run without a server (``temporary_server``).

Everything runs as ``prefect`` CLI subprocesses: the server (SQLite under PREFECT_HOME),
``prefect deploy --all`` for ``prefect.yaml``, and one process worker per work pool. A process
worker, not ``serve``: it starts every flow run in a process of its own and, on a cancel from
the UI, terminates that process, whose SIGTERM handler lets the flow kill its agents' process
groups (under ``serve`` an agent was measured surviving as an orphan). Each process runs in a
session of its own, out of reach of the terminal's Ctrl-C, and dies with the process that
started it. On stop everything started here, and everything those processes started, is
stopped: flow runs first (so they can record their end), then the workers, then the server.
While ``tgflow server`` runs, a record in its home (SERVER_RECORD, ``announced``) says where,
and ``tgflow run`` reports to it instead of starting a temporary server (``running_server``).
Prefect itself is imported only to point this process at a server (``reporting_to``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
from filelock import FileLock, Timeout

from deployments.definitions import FLOW_NAME, load_project, tgflow_root
from tasks_lib.agents.process import descendants, dies_with, group_alive, kill_group, pid_alive
from tasks_lib.errors import TgflowError

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
HEALTH_TIMEOUT_S = 180.0
COMMAND_TIMEOUT_S = 300.0
START_LOCK = "tgflow-server-start.lock"  # in PREFECT_HOME: one server starting at a time
SERVER_RECORD = "tgflow-server.json"  # in PREFECT_HOME: where a running `tgflow server` serves
DATABASE_URL = "PREFECT_SERVER_DATABASE_CONNECTION_URL"  # Prefect's (PREFECT_API_... is its alias)
# The line of a log that says what went wrong: an exception's "module.SomeError: ..." line.
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")


class ServerError(TgflowError):
    """A Prefect process that would not start, answer or finish; the message has its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def advertised(host: str) -> str:
    """The name other machines reach a server listening on ``host`` by: a wildcard address
    listens everywhere, so the machine's own name stands for it."""
    return socket.gethostname() if host in ("0.0.0.0", "::") else host


def prefect_env(
    home: Path, port: int, extra: Mapping[str, str] | None = None, host: str = HOST
) -> dict[str, str]:
    """The environment every process here runs with.

    PREFECT_UI_API_URL matters: without it the UI served on a port other than 4200 calls the
    API on 4200 and shows "Can't connect to Server API"; a browser on another machine needs
    the server's own address in it, not 127.0.0.1.
    """
    api = f"http://{advertised(host)}:{port}/api"
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api,
            "PREFECT_UI_API_URL": api,
            "PREFECT_SERVER_API_HOST": host,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_COLORS": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


class RetryUnavailable(httpx.HTTPTransport):
    """Prefect's SQLite server answers 503 while a burst of writes holds its database (seen
    while runs finish together); the same call goes through a moment later."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(5):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(1.0)
        return super().handle_request(request)


def api_client(api_url: str, timeout_s: float = 30.0) -> httpx.Client:
    """A client of a Prefect server's REST API that rides out its brief 503s."""
    return httpx.Client(base_url=api_url, timeout=timeout_s, transport=RetryUnavailable())


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@dataclass
class LocalPrefect:
    """A Prefect server with its deployments and workers; a context manager that stops all."""

    root: Path
    home: Path
    port: int = DEFAULT_PORT
    host: str = HOST  # where the server listens: another address serves other machines
    extra_env: dict[str, str] = field(default_factory=dict)
    prefect_file: str = "prefect.yaml"
    # The server's database (flows/postgres.py), else SQLite under home; only the server's
    # process is given it, not the workers and flow runs: it holds the database's password.
    database_url: str | None = field(default=None, repr=False)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{advertised(self.host)}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return prefect_env(self.home, self.port, self.extra_env, self.host)

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def prefect(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "prefect", *args]

    def _spawn(
        self, name: str, argv: list[str], cwd: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path(name).open("ab")
        self._logs.append(log)
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # SIGTERM: a worker still stops its flow runs; started from the main thread.
            preexec_fn=dies_with(os.getpid(), signal.SIGTERM),
        )
        self.procs[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def see_log(self, name: str, text: str | None = None) -> str:
        """Where the rest is, for a one-line message: the log, and the last line of ``text``
        (the log's own by default) that names an error, else its last line; a traceback
        stays in the log."""
        path = self.log_path(name)
        if text is None:
            text = path.read_text(errors="replace") if path.exists() else ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if ERROR_LINE.match(line)]
        if errors:
            return f"its log: {path} (last error: {errors[-1][:300]})"
        return f"its log: {path}" + (f" (last line: {lines[-1][:300]})" if lines else "")

    def start_server(self, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        """Start the server and wait until it answers, holding START_LOCK in PREFECT_HOME
        from spawn to answer: a server migrates its SQLite database while it starts, and two
        doing so at once on a fresh home fail ("index ... already exists", a traceback)."""
        self.home.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.home / START_LOCK)
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout:
            raise ServerError(
                f"another Prefect server on {self.home} was still starting after "
                f"{timeout_s:.0f} s (it holds {lock.lock_file}); wait for it, or stop it"
            ) from None
        try:
            self._start_server(timeout_s)
        finally:
            lock.release()

    def _start_server(self, timeout_s: float) -> None:
        reach = advertised(self.host)
        with socket.socket() as sock:
            if sock.connect_ex((reach, self.port)) == 0:
                raise ServerError(
                    f"port {self.port} on {reach} is already in use; pick another with --port"
                )
        proc = self._spawn(
            "server",
            self.prefect("server", "start", "--host", self.host, "--port", str(self.port)),
            self.root,
            {DATABASE_URL: self.database_url} if self.database_url else None,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerError(
                    f"the Prefect server exited ({proc.returncode}) before it answered; "
                    + self.see_log("server")
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise ServerError(
            f"the Prefect server did not answer within {timeout_s:.0f} s; " + self.see_log("server")
        )

    def run_cli(self, name: str, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """Run one ``prefect`` command to completion; its output goes to ``logs/<name>.log``."""
        try:
            done = subprocess.run(
                self.prefect(*args),
                cwd=self.root,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerError(
                f"`prefect {' '.join(args)}` did not finish in {timeout_s:g} s"
            ) from exc
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("a") as log:
            log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise ServerError(
                f"`prefect {' '.join(args)}` failed ({done.returncode}); "
                + self.see_log(name, done.stdout + done.stderr)
            )
        return done.stdout

    def ensure_work_pools(self) -> list[str]:
        pools = load_project(self.root, self.prefect_file).work_pools
        for pool in pools:
            with api_client(self.api_url) as api:
                found = api.get(f"/work_pools/{pool}")
            if found.status_code == 404:
                self.run_cli("work-pool", "work-pool", "create", pool, "--type", "process")
        return pools

    def deploy(self) -> str:
        """Register every deployment of ``prefect.yaml`` (the same call a user would make)."""
        self.ensure_work_pools()
        custom = (
            [] if self.prefect_file == "prefect.yaml" else ["--prefect-file", self.prefect_file]
        )
        return self.run_cli("deploy", "--no-prompt", "deploy", "--all", *custom)

    def set_paused(self, deployment: str, paused: bool, flow: str = FLOW_NAME) -> None:
        with api_client(self.api_url) as api:
            found = api.get(f"/deployments/name/{flow}/{deployment}")
            found.raise_for_status()
            done = api.patch(f"/deployments/{found.json()['id']}", json={"paused": paused})
            done.raise_for_status()

    def start_workers(self, pools: list[str] | None = None) -> None:
        for pool in pools or load_project(self.root, self.prefect_file).work_pools:
            self._spawn(
                f"worker-{pool}", self.prefect("worker", "start", "--pool", pool), self.root
            )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ServerError(f"{name} exited ({proc.returncode}); " + self.see_log(name))

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop flow runs, then workers, then the server, then anything still left over.

        Our processes run in sessions of their own, out of reach of the terminal's Ctrl-C:
        a second Ctrl-C must not break this off, or they would all be left running.
        """
        with _interrupts_deferred():
            self._stop(grace_s)

    def _stop(self, grace_s: float) -> None:
        ours = {p.pid for p in self.procs.values() if p.poll() is None}
        spawned = descendants(ours)
        workers = [p for n, p in self.procs.items() if n.startswith("worker-")]
        flow_runs = descendants({p.pid for p in workers if p.poll() is None})
        # Flow runs were started by the worker (some in sessions of their own): SIGTERM lets
        # the flow engine mark them crashed and the flow kill its agents' groups.
        for pid in flow_runs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(pid_alive(pid) for pid in flow_runs):
            time.sleep(0.2)
        for name in sorted(self.procs, key=lambda n: n == "server"):
            proc = self.procs[name]
            if proc.poll() is None:
                kill_group(proc.pid, grace_s=grace_s)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        for pgid in {g for g in map(process_group, spawned) if g is not None}:
            if pgid != os.getpgrp() and group_alive(pgid):
                kill_group(pgid, grace_s=1.0)
        for pid in spawned:
            with contextlib.suppress(ProcessLookupError):
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
        for log in self._logs:
            log.close()
        self._logs.clear()
        self.procs.clear()

    def __enter__(self) -> LocalPrefect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_home(home: str | None = None, root: Path | None = None) -> Path:
    """Where ``tgflow server`` keeps its database and its record: ``--home``, else
    PREFECT_HOME, else ``.prefect/`` in tgflow's checkout (ROOT)."""
    chosen = home or os.environ.get("PREFECT_HOME")
    if chosen:
        return Path(chosen).expanduser().resolve()
    return (root or tgflow_root()) / ".prefect"


@dataclass(frozen=True)
class ServerRecord:
    """Where a running ``tgflow server`` serves, kept in its home (SERVER_RECORD) for as long
    as it runs, so that ``tgflow run`` reports to it rather than start a server of its own.
    ``pid`` is the ``tgflow server`` process: its Prefect server dies with it."""

    api_url: str
    ui_url: str
    pid: int
    started_at: str


@contextlib.contextmanager
def announced(local: LocalPrefect) -> Iterator[ServerRecord]:
    """Record the answering server in its home for the block; on the way out the record is
    removed unless another ``tgflow server`` on the same home has replaced it since."""
    record = ServerRecord(
        api_url=local.api_url,
        ui_url=local.ui_url,
        pid=os.getpid(),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    path = local.home / SERVER_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)  # Prefect makes the home later, if at all
    partial = path.with_name(f".{SERVER_RECORD}.{os.getpid()}")
    partial.write_text(json.dumps(asdict(record)) + "\n", encoding="utf-8")
    partial.replace(path)  # a reader never sees half a record
    try:
        yield record
    finally:
        if _read_record(path) == record:
            path.unlink(missing_ok=True)


def running_server(home: Path) -> ServerRecord | None:
    """The ``tgflow server`` recorded in ``home``, if it still runs and answers, else None:
    a record left by a server killed outright (no clean stop) names a dead pid, and one whose
    server hangs does not answer /api/health within a second."""
    record = _read_record(home / SERVER_RECORD)
    if record is None or not pid_alive(record.pid):
        return None
    try:
        answer = httpx.get(f"{record.api_url}/health", timeout=1.0)
    except httpx.HTTPError:
        return None
    return record if answer.status_code == 200 else None


def _read_record(path: Path) -> ServerRecord | None:
    """The record in ``path``; None when there is none or it is not one (written by hand,
    or by another version of tgflow)."""
    try:
        return ServerRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def prefect_home() -> Path:
    """Where Prefect keeps its database: PREFECT_HOME, or Prefect's default."""
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def api_configured() -> bool:
    """Whether Prefect in this process already has an API to report to (the environment, the
    active profile, or a settings context such as a test harness)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@contextlib.contextmanager
def temporary_server() -> Iterator[str]:
    """A Prefect server of this process's own on a free port (its database under
    PREFECT_HOME), stopped when the block ends; yields its API URL.

    Started as ``tgflow server`` starts its own: in a session of its own, so the terminal's
    Ctrl-C does not reach it and the flow's last state reports still find it, and dying with
    this process however it ends. Without the UI, which a terminal run does not need. Inside
    the block PREFECT_API_URL points at it (``reporting_to``).
    """
    local = LocalPrefect(
        root=Path.cwd(),
        home=prefect_home(),
        port=free_port(),
        extra_env={"PREFECT_SERVER_UI_ENABLED": "false"},
    )
    with local:
        local.start_server()
        with reporting_to(local.api_url):
            try:
                yield local.api_url
            finally:
                _send_pending()


@contextlib.contextmanager
def reporting_to(api_url: str) -> Iterator[None]:
    """PREFECT_API_URL is ``api_url`` for the block: in os.environ for the processes started
    from here and in Prefect's settings for this one (Prefect reads the environment once, on
    import)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def _send_pending(timeout_s: float = 5.0) -> None:
    """Send the logs and events Prefect still queues for the server before it stops: sent at
    exit instead, they would meet a stopped server, retry for a minute and end in an error."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout_s)
    EventsWorker.drain_all(timeout=timeout_s)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM only say "still stopping" while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def still_stopping(signum: int, frame: object) -> None:
        print("still stopping, please wait ...", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, still_stopping) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
