"""Durations learned from earlier runs: each run's history is a small JSON file beside its
review, and the next run weighs its tasks by it (a task's own runs, else its class, else its
scope), so the long task starts first even when its scope says it is small."""

from __future__ import annotations

import json
import queue
from datetime import UTC, datetime
from pathlib import Path

from helpers.gitrepos import make_origin, task_md
from helpers.workspaces import open_ws

from tasks_lib.graph.dag import TaskGraph
from tasks_lib.graph.taskfile import Risk, Scope, Task
from tasks_lib.run.config import RunConfig
from tasks_lib.run.durations import (
    RunHistory,
    history_path,
    learned_costs,
    read_histories,
    run_history,
)
from tasks_lib.run.records import Attempt, NodeRecord, NodeStatus, RunRecord
from tasks_lib.run.scheduler import schedule
from tasks_lib.run.setup import prepare

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def task(task_id: str, scope: Scope | None = None, risk: Risk | None = None) -> Task:
    return Task(id=task_id, name=task_id, scope=scope, risk=risk, path=Path(f"{task_id}.md"))


def node(
    task_id: str, seconds: float, status: NodeStatus = NodeStatus.COMPLETED, attempts: int = 1
) -> NodeRecord:
    """A node that ran ``seconds``: three quarters of them the agent's, a quarter validating."""
    return NodeRecord(
        task_id=task_id,
        status=status,
        attempts=[Attempt(number=n, status=status) for n in range(1, attempts + 1)],
        sessions=attempts,
        agent_seconds=seconds * 0.75,
        validate_seconds=seconds * 0.25,
    )


def run_record(run_name: str, *nodes: NodeRecord) -> RunRecord:
    return RunRecord(
        run_name=run_name,
        origin="/somewhere/origin.git",
        base="main",
        started_at=WHEN,
        finished_at=WHEN,
        max_parallel=2,
        nodes=list(nodes),
    )


def save(aar_dir: Path, run: RunRecord, *tasks: Task) -> Path:
    """Write the run's history where the flow commits it, beside the review."""
    path = Path(history_path(str(aar_dir / f"{run.run_name}.md")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_history(run, {t.id: t for t in tasks}).model_dump_json())
    return path


def test_history_keeps_the_nodes_that_ran_and_only_their_numbers(tmp_path: Path) -> None:
    worked = node("api", 110.0, NodeStatus.FAILED, attempts=2)
    worked.reason = "validation failed: token sk-live-secret in /home/me/src"
    worked.notes = ["merged by hand"]
    worked.log_path = "/home/me/.cache/tgflow/logs/api.log"
    done = NodeRecord(task_id="setup", status=NodeStatus.COMPLETED, already_done=True)
    skipped = NodeRecord(task_id="ui", status=NodeStatus.SKIPPED, reason="upstream api failed")
    run = run_record("2026-01-02-030405-brave-fox", worked, done, skipped)

    path = save(tmp_path / "docs/aar", run, task("api", Scope.BROAD, Risk.HIGH))

    assert path == tmp_path / "docs/aar/2026-01-02-030405-brave-fox.json"
    text = path.read_text()
    assert "secret" not in text and "/home/me" not in text and "hand" not in text
    document = json.loads(text)
    assert document["nodes"] == [
        {
            "task_id": "api",
            "status": "failed",
            "scope": "broad",
            "risk": "high",
            "agent_seconds": 82.5,
            "validate_seconds": 27.5,
            "attempts": 2,
            "merge_began": None,  # it never reached the merge
            "merge_ended": None,
        }
    ]
    (read,), warnings = read_histories(tmp_path / "docs/aar")
    assert warnings == [] and read == RunHistory.model_validate(document)
    assert read.run_name == run.run_name


def test_a_task_that_ran_before_is_expected_to_take_the_median_of_its_completed_runs(
    tmp_path: Path,
) -> None:
    for n, seconds in enumerate([100.0, 330.0, 220.0]):
        save(tmp_path, run_record(f"run-{n}", node("a", seconds)), task("a", Scope.SYSTEM))
    learned = learned_costs(tmp_path, [task("a", Scope.SYSTEM)])
    assert learned.durations == {"a": 220.0}
    assert learned.costs == {"a": 220}


def test_a_new_task_is_expected_to_take_its_class_else_its_scope_else_its_scope_cost(
    tmp_path: Path,
) -> None:
    risky = [(f"risky-{n}", s) for n, s in enumerate([600.0, 610.0, 590.0, 620.0, 580.0])]
    safe = [("safe-1", 40.0), ("safe-2", 60.0)]
    save(
        tmp_path,
        run_record("run-1", *(node(i, s) for i, s in [*risky, *safe])),
        *(task(i, Scope.NARROW, Risk.HIGH) for i, _ in risky),
        *(task(i, Scope.NARROW, Risk.LOW) for i, _ in safe),
    )
    new = [
        task("risky", Scope.NARROW, Risk.HIGH),  # its class: five narrow, high-risk runs
        task("safe", Scope.NARROW, Risk.LOW),  # two of its class: too few, all narrow ones
        task("medium", Scope.NARROW, Risk.MEDIUM),  # no such class: all narrow ones
        task("huge", Scope.SYSTEM),  # no system task ran: its scope cost, in seconds
    ]
    learned = learned_costs(tmp_path, new)
    assert learned.durations == {"risky": 600.0, "safe": 590.0, "medium": 590.0, "huge": None}
    # Seconds per scope cost unit: the median of the seven narrow runs (cost 2), halved.
    assert learned.costs == {"risky": 600, "safe": 590, "medium": 590, "huge": 16 * 295}


def test_a_task_that_ran_long_without_finishing_is_expected_to_take_at_least_that(
    tmp_path: Path,
) -> None:
    save(
        tmp_path,
        run_record("run-1", node("stuck", 3000.0, NodeStatus.TIMED_OUT), node("quick", 100.0)),
        task("stuck", Scope.SINGLE),
        task("quick", Scope.SINGLE),
    )
    save(tmp_path, run_record("run-2", node("crash", 5.0, NodeStatus.FAILED)), task("crash"))
    learned = learned_costs(tmp_path, [task("stuck", Scope.SINGLE), task("crash", Scope.SINGLE)])
    assert learned.durations == {"stuck": 3000.0, "crash": 100.0}  # crash: single's median


def test_without_history_nothing_is_learned_and_scope_costs_stay(tmp_path: Path) -> None:
    save(tmp_path, run_record("run-1", node("a", 50.0, NodeStatus.FAILED)), task("a"))
    for folder in (tmp_path / "absent", tmp_path):  # no folder; only a node that failed
        learned = learned_costs(folder, [task("a"), task("b", Scope.BROAD)])
        assert learned.durations == {"a": None, "b": None}
        assert learned.costs == {} and learned.warnings == []


def test_a_file_that_is_not_a_history_is_skipped_with_one_line_naming_it(tmp_path: Path) -> None:
    save(tmp_path, run_record("run-1", node("a", 70.0)), task("a"))
    (tmp_path / "broken.json").write_text('{"format": "tgflow-run-history", "nodes": [')
    (tmp_path / "package.json").write_text('{"name": "site", "version": "1.0.0"}')
    newer = json.loads((tmp_path / "run-1.json").read_text()) | {"version": 2}
    (tmp_path / "run-9.json").write_text(json.dumps(newer))
    (tmp_path / "folder.json").mkdir()

    learned = learned_costs(tmp_path, [task("a")])

    assert learned.durations == {"a": 70.0}
    assert len(learned.warnings) == 4
    for name in ("broken", "package", "run-9", "folder"):
        (line,) = [w for w in learned.warnings if w.startswith(f"{tmp_path}/{name}.json: ")]
        assert "not a tgflow run history" in line and "\n" not in line
        assert "delete or move the file" in line
    (line,) = [w for w in learned.warnings if "/package.json" in w]
    assert "(format: Field required)" in line


SCOPED = {
    "tasks/long.md": task_md("long").replace("status: pending", "status: pending\nscope: single"),
    "tasks/wide.md": task_md("wide").replace("status: pending", "status: pending\nscope: broad"),
    "tasks/mid.md": task_md("mid").replace("status: pending", "status: pending\nscope: moderate"),
}


def started_in_order(graph: TaskGraph) -> list[str]:
    """The real scheduler on one slot, every node finishing as soon as it starts."""
    completions: queue.Queue[NodeRecord] = queue.Queue()
    result = schedule(
        graph,
        max_parallel=1,
        submit=lambda task_id, _: completions.put(NodeRecord(task_id=task_id, status="completed")),
        completions=completions,
    )
    return result.submitted


def test_a_run_starts_the_task_history_says_is_long_first_though_its_scope_says_small(
    tmp_path: Path,
) -> None:
    earlier = run_record(
        "2026-01-01-000000-calm-owl",
        node("long", 4000.0, NodeStatus.TIMED_OUT),
        node("wide", 300.0),
        node("mid", 200.0),
    )
    history = run_history(earlier, {})
    files = {**SCOPED, "docs/aar/2026-01-01-000000-calm-owl.json": history.model_dump_json()}
    origin = make_origin(tmp_path, files)
    config = RunConfig(origin=str(origin), workspace_root=str(tmp_path / "ws"), sandbox="none")
    ws = open_ws(origin, tmp_path / "ws")

    run = prepare(config, ws)
    checked = prepare(config, ws, ws.base_ref())  # pre-flight: for checking, scope costs

    assert started_in_order(checked.graph) == ["wide", "mid", "long"]
    assert started_in_order(run.graph) == ["long", "wide", "mid"]
    assert run.graph.cost("long") == 4000 and run.warnings == []


def test_a_bad_history_file_on_base_warns_and_the_run_goes_on_with_scope_costs(
    tmp_path: Path,
) -> None:
    origin = make_origin(tmp_path, {**SCOPED, "docs/aar/notes.json": "[1, 2"})
    config = RunConfig(origin=str(origin), workspace_root=str(tmp_path / "ws"), sandbox="none")
    ws = open_ws(origin, tmp_path / "ws")

    run = prepare(config, ws)

    assert [w for w in run.warnings if "notes.json" in w] == [
        "docs/aar/notes.json: not a tgflow run history (Invalid JSON: EOF while parsing a list "
        "at line 1 column 5); skipped when learning task durations (delete or move the file)"
    ]
    assert [run.graph.cost(i) for i in ("long", "wide", "mid")] == [1, 8, 4]
