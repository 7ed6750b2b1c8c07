"""Conflicts on a hot file, through the real flow: every node lands, none is starved, and a
retry caused only by a conflict resolves the conflict instead of redoing the task."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.gitrepos import git, make_origin, show, task_md

from tasks_lib.run.config import RunConfig
from tasks_lib.run.records import Cause, NodeStatus, RunRecord

pytestmark = pytest.mark.prefect

NO_MARKERS = "! grep -qE '^(<<<<<<<|=======|>>>>>>>)' CHANGELOG.md"


def test_four_nodes_appending_to_one_file_all_merge(prefect_server: str, tmp_path: Path) -> None:
    """Four tasks in flight at once all append to CHANGELOG.md: each later one conflicts, and
    with two rounds and no retries every one must still land, keeping every line."""
    from flows.graph_flow import tgflow_run

    ids = [f"hot{i}" for i in range(1, 5)]
    files = {"CHANGELOG.md": "# Changelog\n"}
    for task_id in ids:
        steps = [{"append": {"path": "CHANGELOG.md", "text": f"- {task_id}\n"}}]
        files[f"tasks/{task_id}.md"] = task_md(task_id, steps=steps)
    origin = make_origin(tmp_path, files)
    validate = f"sleep 0.3 && {NO_MARKERS}"  # slow enough for others to merge meanwhile
    config = RunConfig(
        origin=str(origin),
        agent="scripted",
        max_parallel=4,
        conflict_rounds=2,
        retries=0,
        validate_commands=[validate],
        workspace_root=str(tmp_path / "ws"),
    )

    state = tgflow_run(config, return_state=True)

    assert state.is_completed(), state.message
    record = state.result()
    assert isinstance(record, RunRecord)
    assert {r.task_id: r.status for r in record.nodes} == dict.fromkeys(ids, NodeStatus.COMPLETED)
    assert all(len(r.conflicts) <= 2 for r in record.nodes)
    assert sum(len(r.conflicts) for r in record.nodes) >= 1  # they did meet in the file
    lines = show(origin, "CHANGELOG.md").splitlines()
    assert lines[0] == "# Changelog" and sorted(lines[1:]) == [f"- {t}" for t in ids]
    checkout = tmp_path / "main"
    git(tmp_path, "clone", "-q", str(origin), str(checkout))
    done = subprocess.run(["bash", "-c", validate], cwd=checkout, check=False)
    assert done.returncode == 0  # main passes validation


AGENT = textwrap.dedent(
    """\
    # A command agent: logs each prompt; develops by appending to SHARED.md; resolves a
    # conflict by keeping both sides. While it works someone else pushes to the same file,
    # during its development and during its first resolution only.
    import pathlib, subprocess, sys

    prompt_file, origin, logs = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    ident = ["-c", "user.name=Someone", "-c", "user.email=someone@example.invalid"]
    text = pathlib.Path(prompt_file).read_text()
    n = len(list(logs.glob("prompt-*.md"))) + 1
    (logs / f"prompt-{n}.md").write_text(text)

    def git(*args, cwd="."):
        subprocess.run(["git", *ident, *args], cwd=cwd, check=True, capture_output=True)

    def someone_else_pushes(line):
        other = logs / f"other-{n}"
        git("clone", "-q", origin, str(other))
        header, rest = (other / "SHARED.md").read_text().split("\\n", 1)
        (other / "SHARED.md").write_text(f"{header}\\n{line}\\n{rest}")  # where the task writes
        git("commit", "-q", "-am", line, cwd=other)
        git("push", "-q", "origin", "main", cwd=other)

    if "## Resolve merge conflicts" in text:
        out = subprocess.run(["git", "diff", "--name-only", "--diff-filter=U"],
                             capture_output=True, text=True, check=True).stdout.split()
        for name in out:
            path = pathlib.Path(name)
            kept = [line for line in path.read_text().splitlines(keepends=True)
                    if not line.startswith(("<<<<<<<", "=======", ">>>>>>>"))]
            path.write_text("".join(kept))
            git("add", name)
        git("commit", "-q", "--no-edit")
        if not (logs / "resolved-once").exists():
            (logs / "resolved-once").write_text("")
            someone_else_pushes("someone 2")
    else:
        with open("SHARED.md", "a") as f:
            f.write("the task\\n")
        git("commit", "-q", "-am", "the task")
        someone_else_pushes("someone 1")
    """
)


def test_a_retry_caused_only_by_a_conflict_resolves_it_instead_of_redoing_the_task(
    prefect_server: str, tmp_path: Path
) -> None:
    """Someone pushes to the file the task changes while it develops, and again while it
    resolves, so attempt 1 fails on a conflict. Attempt 2 has nothing to fix: no 'find and fix
    the cause' session, only the conflict round on the kept branch, and it lands."""
    from flows.graph_flow import tgflow_run

    origin = make_origin(
        tmp_path, {"SHARED.md": "# shared\n", "tasks/t.md": task_md("t", steps=[])}
    )
    agent, logs = tmp_path / "agent.py", tmp_path / "logs"
    agent.write_text(AGENT)
    logs.mkdir()
    config = RunConfig(
        origin=str(origin),
        agent_command=[sys.executable, str(agent), "{prompt_file}", str(origin), str(logs)],
        agent="command",
        validate_commands=["true"],
        conflict_rounds=1,
        retries=1,
        retry_delay_s=0,
        workspace_root=str(tmp_path / "ws"),
        sandbox="none",  # the agent plays the someone pushing, and logs its prompts outside
    )

    state = tgflow_run(config, return_state=True)

    assert state.is_completed(), state.message
    record = state.result()
    assert isinstance(record, RunRecord)
    (node,) = record.nodes
    assert [(a.number, a.cause) for a in node.attempts] == [(1, Cause.CONFLICT), (2, None)]
    prompts = [p.read_text() for p in sorted(logs.glob("prompt-*.md"))]
    second = [p for p in prompts if "\nAttempt: 2\n" in p]
    assert second and "## Resolve merge conflicts" in second[-1]
    assert not [p for p in second if "Find and fix the cause" in p or "attempt failed" in p]
    assert len(second) == 1, "attempt 2 ran a development session before the conflict round"
    lines = show(origin, "SHARED.md").splitlines()
    assert sorted(lines) == sorted(["# shared", "the task", "someone 1", "someone 2"])


def test_conflict_rounds_come_from_the_flag_or_the_repositorys_file(tmp_path: Path) -> None:
    from tgflow_cli.main import build_parser
    from tgflow_cli.run_command import _config

    (tmp_path / ".tgflow.toml").write_text("conflict_rounds = 5\n")
    flagged = _config(
        build_parser().parse_args(["run", "--origin", "/o", "--conflict-rounds", "3"])
    )
    assert flagged.conflict_rounds == 3 and flagged.with_file(tmp_path).conflict_rounds == 3
    unflagged = _config(build_parser().parse_args(["run", "--origin", "/o"]))
    assert unflagged.with_file(tmp_path).conflict_rounds == 5
