"""A private Postgres cluster for a Prefect server: SQLite, Prefect's default, is one machine's
database ("database is locked" was seen with a single worker), Postgres is what a server with
workers on many machines runs on (``tgflow server --postgres``, docs/distributed.md).

The cluster is Debian's ``postgres`` (scripts/install-postgres.sh) run as a child process: in a
data dir of its own, on a free port of 127.0.0.1 only, with its unix socket in that dir rather
than /var/run. Postgres refuses to run as root, so as root every Postgres program runs as the
``postgres`` user, who owns the data dir. Connections over the socket are trusted (only that
user, and root, can reach it); over TCP they need a password, a fresh one each start, which
only the Prefect server is told (in its database URL). Like LocalPrefect's processes, the
cluster runs in a session of its own, out of reach of the terminal's Ctrl-C (it must outlive
the Prefect server's stop), and dies with the process that started it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flows.prefect_server import HOST, ServerError, _interrupts_deferred, free_port
from tasks_lib.agents.process import dies_with

OWNER = "postgres"  # the user the cluster runs as when tgflow runs as root
ROLE = "prefect"  # the cluster's superuser, the one Prefect connects as
DATABASE = "prefect"
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 60.0
INSTALL = "run scripts/install-postgres.sh (make tools)"
LOG = "postgres.log"  # in the data dir: the cluster's output


class PostgresError(ServerError):
    """The private Postgres would not start, answer or stop; the message says where to look."""


@dataclass(frozen=True)
class PostgresServer:
    """A running private cluster: ``cluster/`` (initdb's), ``postgres.log`` and the socket
    live in ``data_dir``."""

    data_dir: Path
    port: int
    password: str = field(repr=False)  # the URL has it; a repr in a log must not
    pid: int  # the postmaster's

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect's server connects with (asyncpg ships with Prefect)."""
        return f"postgresql+asyncpg://{ROLE}:{self.password}@{HOST}:{self.port}/{DATABASE}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG


def postgres_bin() -> Path:
    """The folder of initdb, postgres and psql: initdb's on PATH (a link stands for its
    target's folder), else Debian's newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "postgres", "pg_ctl", "psql")):
            return folder
    raise PostgresError(
        "Postgres not found (no initdb on PATH nor under /usr/lib/postgresql/*/bin): " + INSTALL
    )


def postgres_problem() -> str | None:
    """Why no private cluster can start here (binaries or user missing), else None."""
    try:
        postgres_bin()
        _owner()
    except PostgresError as exc:
        return str(exc)
    return None


@contextlib.contextmanager
def local_postgres(data_dir: Path | None = None) -> Iterator[PostgresServer]:
    """A private cluster with a database ``prefect`` for the block, then shut down.

    ``data_dir`` keeps the cluster between blocks (a server's runs persist); without it the
    cluster lives in a temporary folder, removed afterwards. The cluster dies with the thread
    that enters the block (``dies_with``): enter it from one that outlives the block.
    """
    temporary = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="tgflow-postgres-")) if data_dir is None else data_dir
    try:
        cluster = _Cluster(folder.resolve(), postgres_bin(), _owner())
        cluster.prepare()
        with cluster.running() as server:
            yield server
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)


def _owner() -> pwd.struct_passwd | None:
    """Whom Postgres runs as: OWNER as root, else this process's user (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OWNER)
    except KeyError:
        raise PostgresError(
            f"Postgres cannot run as root and there is no user {OWNER!r} to run it as: " + INSTALL
        ) from None


@dataclass
class _Cluster:
    data_dir: Path
    bin: Path
    owner: pwd.struct_passwd | None

    @property
    def cluster(self) -> Path:
        return self.data_dir / "cluster"

    def prepare(self) -> None:
        """The data dir, the owner's and reachable by the owner, with a cluster in it."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.owner is not None:
            os.chown(self.data_dir, self.owner.pw_uid, self.owner.pw_gid)
            reach = ["test", "-w", str(self.data_dir), "-a", "-x", str(self.data_dir)]
            if self._run(reach) != 0:
                raise PostgresError(
                    f"user {OWNER} (Postgres does not run as root) cannot reach "
                    f"{self.data_dir}: make the folders above it searchable (chmod o+x) or "
                    "choose a home elsewhere (--home)"
                )
        if not (self.cluster / "PG_VERSION").is_file():
            self._check(
                "initdb",
                [
                    str(self.bin / "initdb"),
                    *("-D", str(self.cluster), "-U", ROLE, "--no-locale", "-E", "UTF8"),
                    *("--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions"),
                ],
                fix=f"if {self.cluster} is left over from an initdb that was stopped, remove it",
            )

    @contextlib.contextmanager
    def running(self) -> Iterator[PostgresServer]:
        port = free_port()
        log = (self.data_dir / LOG).open("ab")
        try:
            proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    *("-D", str(self.cluster), "-p", str(port), "-k", str(self.data_dir)),
                    *("-c", f"listen_addresses={HOST}"),
                ],
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # SIGINT is Postgres's fast shutdown; set after the switch to the owner.
                preexec_fn=dies_with(os.getpid(), signal.SIGINT),
                user=self.uid,
                group=self.gid,
                extra_groups=self.extra_groups,
            )
        finally:
            log.close()  # the child has its own copy
        try:
            server = PostgresServer(self.data_dir, port, secrets.token_urlsafe(24), proc.pid)
            self._wait_ready(proc, port)
            self._psql(
                port,
                f"ALTER ROLE {ROLE} PASSWORD '{server.password}';\n"
                f"SELECT 'CREATE DATABASE {DATABASE}' WHERE NOT EXISTS "
                f"(SELECT FROM pg_database WHERE datname = '{DATABASE}') \\gexec\n"
                f"\\c {DATABASE}\n"
                # Prefect's migrations use trigram indexes.
                "CREATE EXTENSION IF NOT EXISTS pg_trgm;\n",
            )
            yield server
        finally:
            with _interrupts_deferred():
                self._stop(proc)

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        ready = [str(self.bin / "pg_isready"), "-q", "-h", str(self.data_dir), "-p", str(port)]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PostgresError(
                    f"Postgres on {self.data_dir} exited ({proc.returncode}) before it "
                    f"answered; {self._see_log()}"
                )
            if self._run([*ready, "-U", ROLE, "-d", "postgres"]) == 0:
                return
            time.sleep(0.2)
        raise PostgresError(
            f"Postgres on {self.data_dir} did not answer within {START_TIMEOUT_S:.0f} s; "
            + self._see_log()
        )

    def _psql(self, port: int, script: str) -> str:
        """Run ``script`` over the socket (on stdin: the password stays out of argv)."""
        return self._check(
            "psql",
            [
                str(self.bin / "psql"),
                *("-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                *("-h", str(self.data_dir), "-p", str(port), "-U", ROLE, "-d", "postgres"),
            ],
            stdin=script,
        )

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """``pg_ctl stop -m fast``: clients are disconnected, the data is flushed; if that
        does not end it, SIGQUIT (immediate), then SIGKILL."""
        if proc.poll() is None:
            pg_ctl = str(self.bin / "pg_ctl")
            self._run([pg_ctl, "stop", "-D", str(self.cluster), "-m", "fast", "-w", "-t", "30"])
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10.0)
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
        proc.wait()

    def _see_log(self) -> str:
        """Where the rest is, for a one-line message: the log and its last error."""
        path = self.data_dir / LOG
        shown = f"its log: {path} (last error: {worst(path.read_text(errors='replace'))})"
        if "postmaster.pid" in shown:  # "lock file ... already exists"
            shown += (
                "; another Postgres runs on this data dir (a second `tgflow server --postgres` "
                "on the same home?): stop it first"
            )
        return shown

    @property
    def uid(self) -> int | None:
        return None if self.owner is None else self.owner.pw_uid

    @property
    def gid(self) -> int | None:
        return None if self.owner is None else self.owner.pw_gid

    @property
    def extra_groups(self) -> list[int] | None:
        """None keeps this process's groups; as root, none of root's."""
        return None if self.owner is None else []

    def _run(self, argv: list[str], stdin: str | None = None) -> int:
        """Exit status of ``argv`` run as the owner, quietly."""
        return self._exec(argv, stdin).returncode

    def _check(self, what: str, argv: list[str], stdin: str | None = None, fix: str = "") -> str:
        done = self._exec(argv, stdin)
        if done.returncode != 0:
            raise PostgresError(
                f"{what} on {self.data_dir} failed ({done.returncode}): "
                + worst(done.stderr or done.stdout)
                + (f"; {fix}" if fix else "")
            )
        return done.stdout

    def _exec(self, argv: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv,
                cwd=self.data_dir,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                user=self.uid,
                group=self.gid,
                extra_groups=self.extra_groups,
            )
        except subprocess.TimeoutExpired:
            raise PostgresError(
                f"`{Path(argv[0]).name}` on {self.data_dir} did not finish in "
                f"{COMMAND_TIMEOUT_S:.0f} s; see {self.data_dir / LOG}"
            ) from None


def worst(text: str) -> str:
    """The line of Postgres's output that says what went wrong: its last error (``FATAL:``,
    ``ERROR:``, ``initdb: error:``), else its last line; the rest stays in the output."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"\b(FATAL|ERROR|error):", line)]
    return (errors or lines or ["no output"])[-1][:300]
