"""Fault cases of what tgflow is given: broken task files, ids made to look like options or
paths, an origin out of reach, an origin others push to while the run goes on, and a second
run on the same origin. Real git, the real CLI where the case is what a user sees, and each
case with an origin ends with the suite's invariants (tests/faults/invariants.py)."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from faults.invariants import (
    TGFLOW,
    add_user_refs,
    assert_invariants,
    marked_commits,
    marked_env,
    snapshot,
    survivors,
)
from helpers.gitrepos import git, log, make_origin, push_change, show, task_md
from helpers.workspaces import open_ws

from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.run.records import NodeRecord, NodeStatus

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = "test -f README.md"
PERSON = "Written by a person, kept by tgflow."
BROKEN_YAML = "---\nid: d\nname: [unclosed\n---\n\n## Description\n\nDo d.\n"


def marker() -> str:
    return f"tgflow-fault-{uuid.uuid4().hex}"


def commit_as(mark: str) -> dict:
    """The script step that makes the agent's commit findable by ``marked_commits``."""
    return {"commit": mark}


def write(path: str, content: str) -> dict:
    return {"write": {"path": path, "content": content}}


def good(task_id: str, mark: str) -> str:
    return task_md(
        task_id,
        steps=[write(f"{task_id}.txt", f"{task_id}\n"), commit_as(mark)],
        extra_body=f"\n## Notes\n\n{PERSON}\n",
    )


def tgflow(tmp_path: Path, mark: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TGFLOW), *argv], cwd=ROOT, env=marked_env(mark, tmp_path / "prefect-home"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def run_args(origin: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"),
        "--agent", "scripted", "--validate", VALIDATE, *extra,
    ]  # fmt: skip


def run(ws: Workspace, task_id: str, settings: NodeSettings | None = None) -> NodeRecord:
    task = ws.find_task(task_id)
    assert task is not None, f"no task {task_id!r} in {ws.integration}"
    return run_node(
        ws, task, ScriptedAgent(), settings or NodeSettings(validate_commands=[VALIDATE])
    )


def refused_strictly(tmp_path: Path, bad: dict[str, str], problem: str) -> None:
    """A strict run of a graph with one bad file beside a good task: exit 2 before Prefect
    starts, one line naming the file and the problem, nothing merged, nothing left behind."""
    mark = marker()
    origin = make_origin(tmp_path, {"README.md": "demo\n", "tasks/g.md": good("g", mark), **bad})
    add_user_refs(origin)
    before, main = snapshot(origin), git(origin, "rev-parse", "main")

    done = tgflow(tmp_path, mark, *run_args(origin, tmp_path, "--strict"))

    assert done.returncode == 2, done.stderr
    heading, *problems = [line for line in done.stderr.splitlines() if line.strip()]
    assert "problem(s), nothing was run" in heading, done.stderr
    assert any(problem in line for line in problems), done.stderr
    assert git(origin, "rev-parse", "main") == main
    assert_invariants(
        origin, before=before, validate=[VALIDATE], marker=mark,
        output=[done.stdout, done.stderr], user_text={"tasks/g.md": PERSON},
    )  # fmt: skip


def test_a_dependency_cycle_is_refused_naming_it_and_nothing_is_merged(tmp_path: Path) -> None:
    """A strict run refuses the graph with exit 2, naming the cycle and the edge to remove."""
    refused_strictly(
        tmp_path,
        {
            "tasks/a.md": task_md("a", depends_on=["b"]),
            "tasks/b.md": task_md("b", depends_on=["a"]),
        },
        "tasks/a.md: dependency cycle: a -> b -> a",
    )


def test_a_missing_dependency_is_refused_naming_the_id_and_nothing_is_merged(
    tmp_path: Path,
) -> None:
    """A strict run refuses the graph with exit 2, naming the file and the unknown id."""
    refused_strictly(
        tmp_path,
        {"tasks/c.md": task_md("c", depends_on=["nope"])},
        "tasks/c.md: depends on unknown id 'nope'",
    )


def test_broken_yaml_frontmatter_is_refused_naming_the_file_and_nothing_is_merged(
    tmp_path: Path,
) -> None:
    """A strict run refuses the graph with exit 2, naming the file whose YAML does not parse."""
    refused_strictly(
        tmp_path, {"tasks/d.md": BROKEN_YAML}, "tasks/d.md: frontmatter is not valid YAML"
    )


def test_a_lenient_run_merges_the_good_tasks_and_holds_every_bad_file_back(
    tmp_path: Path,
) -> None:
    """A lenient run merges the good task and holds back the cycle, the missing dependency and
    the broken YAML, each with its reason in the table; it exits 1 without a traceback."""
    mark = marker()
    origin = make_origin(
        tmp_path,
        {
            "README.md": "demo\n",
            "tasks/g.md": good("g", mark),
            "tasks/a.md": good("a", mark).replace(
                "status: pending", "status: pending\ndepends_on: [b]"
            ),
            "tasks/b.md": task_md("b", depends_on=["a"]),
            "tasks/c.md": task_md("c", depends_on=["nope"]),
            "tasks/d.md": BROKEN_YAML,
        },
    )
    add_user_refs(origin)
    before = snapshot(origin)

    done = tgflow(tmp_path, mark, *run_args(origin, tmp_path, "--retries", "0"))

    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    for reason in ("dependency cycle", "unknown id 'nope'", "frontmatter is not valid YAML"):
        assert reason in output, output
    subjects = log(origin)
    assert "Merge task g: Task g" in subjects
    assert not [s for s in subjects if s.startswith("Merge task") and s != "Merge task g: Task g"]
    assert "status: completed" in show(origin, "tasks/g.md")
    assert_invariants(
        origin, before=before, validate=[VALIDATE], marker=mark,
        agent_commits=marked_commits([tmp_path / "ws"], mark), output=[done.stdout, done.stderr],
        user_text={"tasks/g.md": PERSON, "tasks/a.md": PERSON},
    )  # fmt: skip


def outside(tmp_path: Path, *inside: Path) -> set[Path]:
    """Every path under ``tmp_path`` that is not under one of ``inside``."""
    return {p for p in tmp_path.rglob("*") if not any(p == i or i in p.parents for i in inside)}


def runs_inside_the_workspace(tmp_path: Path, task_id: str) -> None:
    """A task whose id would be an option or a path to git or the file system completes, and
    tgflow writes nothing outside its workspace and the origin."""
    mark = marker()
    origin = make_origin(
        tmp_path,
        {"README.md": "demo\n", "tasks/x.md": good("x", mark).replace("id: x", f"id: '{task_id}'")},
    )
    add_user_refs(origin)
    before, ws_root = snapshot(origin), tmp_path / "deep" / "ws"
    ws_root.parent.mkdir()
    elsewhere = outside(tmp_path, ws_root, origin)

    record = run(open_ws(origin, ws_root), task_id)

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, "x.txt") == "x"
    assert outside(tmp_path, ws_root, origin) == elsewhere
    names = git(origin, "for-each-ref", "--format=%(refname)").split()
    assert not [n for n in names if "/-" in n or ".." in n], names
    assert_invariants(
        origin, before=before, validate=[VALIDATE], agent_commits=marked_commits([ws_root], mark),
        output=[record.reason or ""], user_text={"tasks/x.md": PERSON},
    )  # fmt: skip


def test_an_id_that_looks_like_an_option_is_made_a_safe_branch_name(tmp_path: Path) -> None:
    """The task ``--force`` completes on a branch no git command can read as an option."""
    runs_inside_the_workspace(tmp_path, "--force")


def test_an_id_that_climbs_out_of_the_workspace_writes_nothing_outside_it(
    tmp_path: Path,
) -> None:
    """The task ``../../etc`` completes with its checkout and branch inside the workspace;
    nothing is written outside it."""
    runs_inside_the_workspace(tmp_path, "../../etc")


def test_an_unreachable_origin_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    """The run exits 2 before Prefect starts, with one line naming the origin and what to check."""
    mark, gone = marker(), tmp_path / "gone.git"

    done = tgflow(tmp_path, mark, *run_args(gone, tmp_path))

    assert done.returncode == 2, done.stderr
    heading, *problems = [line for line in done.stderr.splitlines() if line.strip()]
    assert "1 problem(s), nothing was run" in heading, done.stderr
    assert len(problems) == 1 and f"cannot reach origin {gone}" in problems[0], done.stderr
    assert "Check the URL or path" in problems[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert survivors(mark) == []


def wait_for(ready: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:g}s"
        time.sleep(0.1)


def waiting_agent(task_id: str, mark: str, go: Path) -> str:
    """A task whose agent waits, visibly in its command line, until ``go`` exists."""
    wait = f": {mark}-working; until test -e {go}; do sleep 0.1; done; true"
    steps = [{"run": wait}, write(f"{task_id}.txt", f"{task_id}\n"), commit_as(mark)]
    return task_md(task_id, steps=steps, extra_body=f"\n## Notes\n\n{PERSON}\n")


def while_the_agent_works(
    ws: Workspace, task_id: str, mark: str, go: Path, meanwhile: Callable[[], None],
    settings: NodeSettings | None = None,
) -> NodeRecord:  # fmt: skip
    """Run the node in a thread; once its agent works, do ``meanwhile``, then let it finish."""
    records: list[NodeRecord] = []
    node = threading.Thread(target=lambda: records.append(run(ws, task_id, settings)))
    node.start()
    try:
        wait_for(lambda: survivors(f"{mark}-working") or not node.is_alive(), "the agent's start")
        assert node.is_alive(), "the node ended before its agent started"
        meanwhile()
    finally:
        go.touch()
        node.join(timeout=120)
    assert records, "the node did not finish"
    return records[0]


def test_a_third_party_push_to_main_during_the_run_is_merged_on_top(tmp_path: Path) -> None:
    """The task is merged on top of the commit someone pushed to main meanwhile; theirs stays."""
    mark, go = marker(), tmp_path / "go"
    origin = make_origin(
        tmp_path, {"README.md": "demo\n", "tasks/t.md": waiting_agent("t", mark, go)}
    )
    add_user_refs(origin)
    before, ws = snapshot(origin), open_ws(origin, tmp_path / "ws")
    theirs: list[str] = []

    def push() -> None:
        theirs.append(push_change(origin, tmp_path, "theirs.txt", "theirs\n", "their change"))

    record = while_the_agent_works(ws, "t", mark, go, push)

    assert record.status == NodeStatus.COMPLETED, record.reason
    git(origin, "merge-base", "--is-ancestor", theirs[0], "main")
    assert show(origin, "theirs.txt") == "theirs" and show(origin, "t.txt") == "t"
    assert_invariants(
        origin, before=before, validate=[VALIDATE, "test -f theirs.txt"], marker=mark,
        agent_commits=marked_commits([ws.root], mark), output=[record.reason or ""],
        user_text={"tasks/t.md": PERSON},
    )  # fmt: skip


def test_validation_that_breaks_only_after_the_merge_never_pushes_a_broken_main(
    tmp_path: Path,
) -> None:
    """The node fails after the merge and no broken main is pushed; the work stays on the
    origin's task branch."""
    mark, go = marker(), tmp_path / "go"
    origin = make_origin(
        tmp_path, {"README.md": "demo\n", "tasks/y.md": waiting_agent("y", mark, go)}
    )
    add_user_refs(origin)
    before, ws = snapshot(origin), open_ws(origin, tmp_path / "ws")
    together = "! (test -f x.txt && test -f y.txt)"  # each alone is fine, both break it
    settings = NodeSettings(validate_commands=[together])

    def push() -> None:
        push_change(origin, tmp_path, "x.txt", "x\n", "someone adds x")

    record = while_the_agent_works(ws, "y", mark, go, push, settings)

    assert record.status == NodeStatus.FAILED
    assert "after merging into main" in (record.reason or ""), record.reason
    assert "main reset to" in (record.reason or "") and "nothing pushed" in (record.reason or "")
    assert not any(s.startswith("Merge task") for s in log(origin))
    assert show(origin, "y.txt", "refs/heads/tgflow/y") == "y"
    assert_invariants(
        origin, before=before, validate=[together], marker=mark,
        agent_commits=marked_commits([ws.root], mark), output=[record.reason or ""],
        user_text={"tasks/y.md": PERSON},
    )  # fmt: skip


def test_a_second_run_on_the_same_clone_waits_for_the_first_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """The second run waits, naming the run that holds the clone, then finds the task done; it
    is merged once."""
    mark, go = marker(), tmp_path / "go"
    origin = make_origin(
        tmp_path, {"README.md": "demo\n", "tasks/t.md": waiting_agent("t", mark, go)}
    )
    add_user_refs(origin)
    before, argv = snapshot(origin), [str(TGFLOW), *run_args(origin, tmp_path)]
    second_out = tmp_path / "second.out"

    def start(name: str, out: int) -> subprocess.Popen[str]:
        env = marked_env(mark, tmp_path / f"prefect-{name}")
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )

    first = start("first", subprocess.PIPE)
    started = [first]
    try:
        wait_for(
            lambda: survivors(f"{mark}-working") or first.poll() is not None,
            "the first run's agent start", 180,
        )  # fmt: skip
        with second_out.open("w") as out:
            second = start("second", out.fileno())
        started.append(second)
        wait_for(
            lambda: "waiting" in second_out.read_text() or second.poll() is not None,
            "the second run's wait", 180,
        )  # fmt: skip
        go.touch()
        first_out, _ = first.communicate(timeout=180)
        second.wait(timeout=180)
    finally:
        go.touch()
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    waited = second_out.read_text()
    assert first.returncode == 0, first_out
    assert second.returncode == 0, waited
    assert "is using tgflow's clone" in waited and "tgflow run in pid" in waited, waited
    assert "already done" in waited, waited
    assert log(origin).count("Merge task t: Task t") == 1
    assert_invariants(
        origin, before=before, validate=[VALIDATE], marker=mark,
        agent_commits=marked_commits([tmp_path / "ws"], mark), output=[first_out, waited],
        user_text={"tasks/t.md": PERSON},
    )  # fmt: skip
