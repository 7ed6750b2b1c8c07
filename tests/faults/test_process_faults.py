"""Fault cases of the agent's process: an agent that cannot start, a tgflow killed with
SIGKILL while its agent works, an agent committing conflict markers. Real git, real
processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

from faults.invariants import survivors
from helpers.gitrepos import log, make_origin, show, task_md
from helpers.workspaces import open_ws

from tasks_lib.agents.base import Agent, Outcome, SessionRequest
from tasks_lib.agents.command import CommandAgent
from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.taskfile import Status, parse_task
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.run.records import NodeRecord, NodeStatus

ROOT = Path(__file__).resolve().parents[2]
MISSING = "tgflow-no-such-agent-program"


def run(ws: Workspace, task_id: str, agent: Agent) -> NodeRecord:
    task = ws.find_task(task_id)
    assert task is not None
    return run_node(ws, task, agent, NodeSettings(validate_commands=["true"]))


def status_on_main(origin: Path, rel: str) -> Status:
    task, problems, _ = parse_task(show(origin, rel, "main"), Path(rel))
    assert task is not None, problems
    return task.status


def test_missing_agent_program_fails_the_node_naming_it(tmp_path: Path) -> None:
    """A missing agent program is a normal node failure naming it and agent_command; the
    failed status reaches main."""
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a")})
    ws = open_ws(origin, tmp_path / "ws")

    record = run(ws, "a", CommandAgent([MISSING, "{prompt_file}"]))

    assert record.status == NodeStatus.FAILED, record.reason
    assert MISSING in record.reason and "agent_command" in record.reason
    assert "Traceback" not in record.reason
    assert status_on_main(origin, "tasks/a.md") == Status.FAILED


def test_prompt_over_the_argument_limit_fails_the_session_saying_how_to_fix(
    tmp_path: Path,
) -> None:
    """A prompt over the kernel's argument limit fails the session, saying to use
    {prompt_file}."""
    agent = CommandAgent(["sh", "-c", "true", "{prompt}"])
    request = SessionRequest(
        task_id="a", worktree=tmp_path, prompt="x" * 3_000_000, timeout_s=30, idle_timeout_s=30
    )

    result = agent.run(request)

    assert result.outcome == Outcome.FAILED
    assert "{prompt_file}" in result.reason and "too long" in result.reason


def test_preflight_refuses_a_missing_agent_program(tmp_path: Path) -> None:
    """Pre-flight refuses a missing agent program in one line, exit 2, nothing run."""
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a")})
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from tgflow_cli.main import main; sys.exit(main())",
         "run", "--origin", str(origin),
         "--agent-command", f"{MISSING} {{prompt_file}}", "--validate", "true",
         "--workspace", str(tmp_path / "ws")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert proc.returncode == 2, proc.stderr
    heading, *problems = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "1 problem(s), nothing was run" in heading, proc.stderr
    assert len(problems) == 1 and MISSING in problems[0] and "agent_command" in problems[0]
    assert "Traceback" not in proc.stderr


def test_agent_dies_with_a_sigkilled_tgflow(tmp_path: Path) -> None:
    """An agent outside a sandbox dies with a tgflow killed by SIGKILL (PR_SET_PDEATHSIG)."""
    marker = f"tgflow-marker-{uuid.uuid4().hex}"
    # The marker is spelled backwards in tgflow's own command line, so only the agent has it.
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tasks_lib.agents.process import run_watched
        run_watched(
            [sys.executable, "-c", "import time; time.sleep(300)", {marker[::-1]!r}[::-1]],
            cwd=Path({str(tmp_path)!r}), timeout_s=300, idle_timeout_s=None,
        )
    """)
    tgflow = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not survivors(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert survivors(marker), "the agent never started"
        os.kill(tgflow.pid, signal.SIGKILL)
        tgflow.wait(timeout=10)
        deadline = time.monotonic() + 5
        while survivors(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = survivors(marker)
        for pid in left:  # do not leave it behind when the test fails
            os.kill(pid, signal.SIGKILL)
        assert left == []
    finally:
        if tgflow.poll() is None:
            tgflow.kill()


def test_conflict_markers_committed_by_the_agent_fail_the_node_naming_the_file(
    tmp_path: Path,
) -> None:
    """Conflict markers the agent committed fail the node before merge, naming the files;
    the branch is kept."""
    marked = "<<<<<<< HEAD\nmine\n=======\ntheirs\n>>>>>>> other\n"
    steps = [
        {"write": {"path": "ok.txt", "content": "fine\n"}},
        {"write": {"path": "docs/notes.md", "content": "intro\n" + marked}},
    ]
    origin = make_origin(tmp_path, {"README.md": "demo\n", "tasks/a.md": task_md("a", steps=steps)})
    ws = open_ws(origin, tmp_path / "ws")
    before = log(origin)

    record = run(ws, "a", ScriptedAgent())

    assert record.status == NodeStatus.FAILED, record.reason
    assert "docs/notes.md" in record.reason and "ok.txt" not in record.reason
    assert "Traceback" not in record.reason
    assert not any(s.startswith("Merge task") for s in log(origin))
    assert len(log(origin)) == len(before) + 1  # only the failed status on main
    assert status_on_main(origin, "tasks/a.md") == Status.FAILED
    assert "=======" in show(origin, "docs/notes.md", "tgflow/a")  # the work is kept
