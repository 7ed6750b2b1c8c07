"""`tgflow run` from a terminal: exit codes, the repository's .tgflow.toml, the final table."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.gitrepos import git, make_origin, push_change, show, task_md
from helpers.processes import children

from tgflow_cli.main import main

pytestmark = pytest.mark.prefect

SCRIPTED = ["--agent", "scripted", "--validate", "true"]  # a real run names both


def WRITE(path: str) -> dict:  # reads as a script step
    return {"write": {"path": path, "content": "ok\n"}}


@pytest.fixture(autouse=True)
def _quiet_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the command sets in os.environ is undone after the test."""
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


def test_run_exits_1_until_every_node_completed_then_0(
    prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = make_origin(
        tmp_path,
        {
            ".tgflow.toml": 'aar_dir = "reviews"\nretries = 0\n',
            "tasks/good.md": task_md("good", steps=[WRITE("good.txt")]),
            "tasks/bad.md": task_md("bad", steps=[{"fail": "not yet"}]),
        },
    )  # fmt: skip
    argv = ["run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"), *SCRIPTED]

    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "1 of 2 nodes did not complete (1 failed): bad" in out
    assert "good" in out and "completed" in out
    listed = git(origin, "ls-tree", "--name-only", "main", "reviews/").split()
    reviews = [f for f in listed if f.endswith(".md")]
    assert len(reviews) == 1  # aar_dir came from the repository's .tgflow.toml
    assert listed == sorted([*reviews, reviews[0].removesuffix(".md") + ".json"])
    assert "bad failed after 1 attempt(s)" in show(origin, reviews[0])  # retries = 0 from it too

    fixed = show(origin, "tasks/bad.md").replace(
        "- fail: not yet", "- write:\n    path: bad.txt\n    content: ok\n"
    )
    push_change(origin, tmp_path, "tasks/bad.md", fixed + "\n", "fix bad")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "every node completed" in out and "already done" in out
    assert show(origin, "bad.txt") == "ok"


def test_bad_options_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--origin", "x", "--max-parallel", "0"]) == 2
    assert "max_parallel" in capsys.readouterr().err


def test_demo_command_runs_the_example_graph_and_says_where_the_review_is(
    prefect_server: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))  # what the demo sets
    assert main(["demo", "--dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "every node completed" in out and "review/release" in out
    copies = list((tmp_path / "d").glob("AAR-*.md"))
    assert len(copies) == 1 and copies[0].read_text().startswith("# AAR: ")
    assert f"A copy of the review: {copies[0]}" in out.replace("\n", "")
    origin = tmp_path / "d" / "demo" / "origin.git"
    assert (
        show(origin, f"docs/aar/{copies[0].name.removeprefix('AAR-')}")
        == copies[0].read_text().strip()
    )


@pytest.mark.parametrize("signame", ["SIGINT", "SIGHUP"])
def test_ctrl_c_stops_the_agents_and_exits_130_at_once_without_a_traceback(
    tmp_path: Path, signame: str
) -> None:
    """Ctrl-C in the terminal signals the whole foreground process group: Prefect's
    temporary server must not die with it, or the flow's last reports hang on a dead
    server for a minute and end in a connection traceback. Closing the terminal (SIGHUP)
    must not leave the agents running either."""
    import os
    import signal
    import subprocess
    import sys
    import time

    started = tmp_path / "agent.pid"
    origin = make_origin(
        tmp_path,
        {"tasks/slow.md": task_md("slow", steps=[{"run": f"echo $PPID > {started}"},
                                                 {"sleep": 300}])},
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    launch = (  # a shell starting a background job ignores SIGINT in it; a terminal does not
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from tgflow_cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launch, "run", "--origin", str(origin),
         "--workspace", str(tmp_path / "ws"), *SCRIPTED,
         "--sandbox", "none"],  # the agent writes its pid beside the repo, and a sandbox's
        # pids are its own: what a sandbox ends is tests/faults/test_sandbox_faults.py's
        cwd=Path(__file__).resolve().parents[2], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (started.exists() and started.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.2)
        agent = int(started.read_text())
        servers = children(proc.pid, b"prefect\0server\0start")
        os.killpg(proc.pid, getattr(signal, signame))  # what Ctrl-C / closing the terminal do
        out, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    assert "interrupted" in out
    assert not Path(f"/proc/{agent}").exists(), f"the agent outlived {signame}"
    assert servers and not any(Path(f"/proc/{pid}").exists() for pid in servers), (
        "Prefect's temporary server outlived the run"
    )


def test_an_unsaved_review_is_not_announced_as_saved(
    prefect_server: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flows.graph_flow

    monkeypatch.setattr(flows.graph_flow, "commit_aar", lambda *a: "push rejected (test)")
    origin = make_origin(tmp_path, {"tasks/good.md": task_md("good", steps=[WRITE("g.txt")])})
    assert (
        main(["run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"), *SCRIPTED]) == 0
    )
    out = capsys.readouterr().out.replace("\n", "")
    assert "After-action review: not saved on the origin" in out
    assert "docs/aar/" not in out


def test_demo_never_deletes_a_folder_of_the_users_that_has_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / ".tgflow-demo" / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("mine")
    assert main(["demo"]) == 2
    assert "holds something else; move it or pass --dir" in capsys.readouterr().err
    assert mine.read_text() == "mine"
