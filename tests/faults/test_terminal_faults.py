"""Fault cases of what a person reads at the terminal: a node that fails, the same with
``--verbose``, two ``tgflow run`` started together on a fresh Prefect home, and a Prefect
server that cannot start. Real processes: ``tgflow run`` as a subprocess with its own
temporary Prefect server, as a person starts it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers.gitrepos import make_origin, show, task_md, writes
from invariants import TRACEBACK, assert_invariants, snapshot

ROOT = Path(__file__).resolve().parents[2]
TGFLOW = [sys.executable, "-c", "import sys; from tgflow_cli.main import main; sys.exit(main())"]
SCRIPTED = ["--agent", "scripted", "--validate", "true"]
WHY = "the tests do not pass yet"
FAILING = {
    ".tgflow.toml": "retries = 1\nretry_delay_s = 0.1\n",
    "tasks/bad.md": task_md("bad", steps=[{"fail": WHY}]),
    "tasks/good.md": task_md("good", steps=writes("good")),
}


def tgflow_run(origin: Path, tmp: Path, home: Path, *extra: str) -> subprocess.Popen[str]:
    """``tgflow run`` as a person starts it: no Prefect API configured, so it starts its
    own temporary server with its database under ``home``; stdout and stderr together."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(home)
    return subprocess.Popen(
        [*TGFLOW, "run", "--origin", str(origin), "--workspace", str(tmp / "ws"),
         *SCRIPTED, *extra],
        cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out


def prefect_logs(home: Path) -> str:
    """Every log message the run's temporary server stored (what the UI shows)."""
    with sqlite3.connect(home / "prefect.db") as db:
        return "\n".join(message for (message,) in db.execute("SELECT message FROM log"))


def node_lines(out: str, task_id: str) -> list[str]:
    """Lines that tell of the node while the run goes (the final table's rows aside)."""
    return [line for line in out.splitlines() if line.startswith(f"{task_id}:")]


def test_a_failed_node_is_one_line_on_the_terminal_and_its_traceback_only_in_prefects_logs(
    tmp_path: Path,
) -> None:
    """A failed node is one line on the terminal (task, status, reason, its log, what to do),
    after all its attempts, with no Prefect traceback; the traceback is in Prefect's logs."""
    origin = make_origin(tmp_path, FAILING)
    before = snapshot(origin)
    home = tmp_path / "prefect-home"

    code, out = finish(tgflow_run(origin, tmp_path, home))

    assert code == 1, out
    assert "NodeFailed" not in out, out
    bad = node_lines(out, "bad")
    assert len(bad) == 1, out
    assert "failed" in bad[0] and "agent failed: exit code 1" in bad[0] and WHY in bad[0]
    assert "bad.log" in bad[0] and "run again" in bad[0], bad[0]
    assert node_lines(out, "good") == ["good: completed"], out
    assert "1 of 2 nodes did not complete (1 failed): bad" in out
    assert show(origin, "good.txt") == "good"
    assert_invariants(origin, before=before, validate=["true"], output=[out])
    stored = prefect_logs(home)
    assert TRACEBACK in stored and "NodeFailed" in stored


def test_verbose_shows_the_traceback_of_a_failed_node(tmp_path: Path) -> None:
    """With ``--verbose`` the terminal shows Prefect's logs, the failed node's traceback
    among them."""
    origin = make_origin(tmp_path, FAILING)

    code, out = finish(tgflow_run(origin, tmp_path, tmp_path / "prefect-home", "--verbose"))

    assert code == 1, out
    assert TRACEBACK in out and "NodeFailed" in out, out


def test_runs_started_together_on_a_fresh_prefect_home_all_succeed(tmp_path: Path) -> None:
    """Three ``tgflow run`` started at the same moment on one fresh Prefect home start their
    temporary servers one after the other (a lock in the home), so its database is migrated
    once and every run completes without a traceback."""
    home = tmp_path / "prefect-home"
    origins = [
        make_origin(tmp_path, {f"tasks/{name}.md": task_md(name, steps=writes(name))}, name)
        for name in ("one.git", "two.git", "three.git")
    ]
    before = [snapshot(origin) for origin in origins]

    procs = [tgflow_run(origin, tmp_path / origin.stem, home) for origin in origins]
    results = [finish(proc) for proc in procs]

    for (code, out), origin, snap in zip(results, origins, before, strict=True):
        assert code == 0, out
        assert "every node completed" in out, out
        assert_invariants(origin, before=snap, validate=["true"], output=[out])


def test_a_prefect_server_that_cannot_start_is_one_line_naming_its_log(tmp_path: Path) -> None:
    """A temporary Prefect server that exits before it answers (here its database is not a
    database) ends the run with one line naming the server's log file, and no traceback."""
    origin = make_origin(tmp_path, {"tasks/good.md": task_md("good", steps=writes("good"))})
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "prefect.db").write_bytes(b"not a database\n" * 100)

    code, out = finish(tgflow_run(origin, tmp_path, home))

    assert code == 1, out
    assert TRACEBACK not in out, out
    errors = [line for line in out.splitlines() if line.startswith("tgflow run:")]
    assert len(errors) == 1 and str(home / "logs" / "server") in errors[0], out
    assert len(out.strip().splitlines()) == 2, out  # "running the task graph ...", the error
