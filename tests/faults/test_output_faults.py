"""Fault cases of an agent's output: an agent that prints its API key and fails, and an agent
that prints without pause. Real git, real processes, and the real flow where the case is
about the flow (its logs, its persisted results, its exit)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from helpers.gitrepos import git, make_origin, show, task_md
from helpers.prefect_fixtures import artifact, task_run_logs, task_runs
from helpers.workspaces import open_ws

from tasks_lib.agents.command import CommandAgent
from tasks_lib.agents.process import KEPT_LINES, run_watched
from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.run.config import NodeSettings, RunConfig
from tasks_lib.run.node import run_node
from tasks_lib.run.records import NodeStatus, RunRecord
from tasks_lib.run.secrets import Masker

KEY_VAR = "FAKE_KEY_VALUE"
KEY = "sk-test-1234567890"
# The agent prints its key, then fails: the key is in its output and in the failure reason.
LEAKY = [{"run": f'echo "using key ${KEY_VAR}"; echo "auth failed for ${KEY_VAR}"; exit 3'}]
FLOOD = [{"run": f"{sys.executable} -c \"while True: print('x' * 120)\""}]
FLOOD_TIMEOUT_S = 5.0


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_VAR, KEY)
    return KEY


def origin_history(origin: Path) -> str:
    """Every commit of every ref on the origin, with its patch (task notes, backups, AAR)."""
    return git(origin, "log", "-p", "--all")


def files_holding(root: Path, text: str) -> list[Path]:
    needle = text.encode()
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_key_printed_by_a_failing_agent_is_masked_in_the_record_and_on_main(
    tmp_path: Path, key: str
) -> None:
    """A key the failing agent printed is ``***`` in the node's record (reasons, notes) and in the
    failure note on the origin's main."""
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=LEAKY)})
    ws = open_ws(origin, tmp_path / "ws")
    task = ws.find_task("a")
    assert task is not None
    lines: list[str] = []

    record = run_node(
        ws, task, ScriptedAgent(), NodeSettings(validate_commands=["true"]),
        on_line=lines.append, mask=Masker.from_env([KEY_VAR]),
    )  # fmt: skip

    assert record.status is NodeStatus.FAILED
    assert any(key in line for line in lines)  # the agent did print it (run_node's caller masks)
    texts = [record.reason, *record.notes]
    texts += [t for a in record.attempts for t in (a.reason, *a.notes)]
    assert not [t for t in texts if key in t]
    assert "***" in record.reason
    history = origin_history(origin)
    assert key not in history
    assert "***" in show(origin, "tasks/a.md")  # the failure note on main, masked
    assert "Traceback" not in record.reason


@pytest.mark.prefect
def test_a_key_printed_by_a_failing_agent_reaches_no_log_result_or_review(
    prefect_server: str, tmp_path: Path, key: str
) -> None:
    """Through the flow, a key the failing agent printed is ``***`` in Prefect's logs and the node's
    log file, and absent from the review, the persisted results and the origin."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    from flows.graph_flow import AAR_KEY, tgflow_run

    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=LEAKY)})
    config = RunConfig(
        origin=str(origin), agent="scripted", agent_api_key_env=KEY_VAR,
        validate_commands=["true"], workspace_root=str(tmp_path / "ws"), retries=0,
    )  # fmt: skip

    state = tgflow_run(config, return_state=True)

    assert state.is_failed()
    run_id = state.state_details.flow_run_id
    (node,) = [r for r in task_runs(run_id) if r.name == "a"]
    logs = task_run_logs(node.id)
    assert logs and not [m for m in logs if key in m]
    assert any("***" in m for m in logs)
    node_logs = list((tmp_path / "ws").rglob("logs/*/a.log"))
    assert len(node_logs) == 1
    assert key not in node_logs[0].read_text() and "***" in node_logs[0].read_text()
    assert key not in artifact(run_id, AAR_KEY)
    assert key not in origin_history(origin)
    storage = Path(str(PREFECT_LOCAL_STORAGE_PATH.value()))  # the persisted NodeRecords
    assert not files_holding(storage, key)


def test_a_flooding_process_keeps_a_bounded_tail_and_stops_on_time(tmp_path: Path) -> None:
    """A process printing without pause is stopped at its timeout; every line is passed on and only
    a bounded tail is kept in memory."""
    seen = 0

    def count(line: str) -> None:
        nonlocal seen
        seen += 1

    started = time.monotonic()
    result = run_watched(
        [sys.executable, "-c", "while True: print('x' * 120)"],
        cwd=tmp_path, timeout_s=FLOOD_TIMEOUT_S, idle_timeout_s=None, on_line=count,
    )  # fmt: skip

    assert result.timed_out
    assert time.monotonic() - started < FLOOD_TIMEOUT_S + 5
    assert seen > KEPT_LINES  # the whole output went through on_line …
    assert len(result.lines) <= KEPT_LINES  # … and only its tail stayed in memory


def test_a_flooding_agent_is_stopped_on_time_without_growing(tmp_path: Path) -> None:
    """A flooding agent is stopped at its timeout, and tgflow's memory does not grow with it.

    The node's caller writes each line to a log file, as graph_node does: slower than the
    agent prints, so whatever the reader queues up is the backlog a flood builds."""
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a")})
    ws = open_ws(origin, tmp_path / "ws")
    task = ws.find_task("a")
    assert task is not None
    agent = CommandAgent([sys.executable, "-c", "while True: print('y' * 120)"])
    node_log = tmp_path / "a.log"

    def to_log(line: str) -> None:
        with node_log.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    settings = NodeSettings(validate_commands=["true"], agent_timeout_s=FLOOD_TIMEOUT_S)
    with peak_rss_growth() as grown:
        started = time.monotonic()
        record = run_node(ws, task, agent, settings, on_line=to_log)
        took = time.monotonic() - started

    assert record.status is NodeStatus.TIMED_OUT, record.reason
    assert took < 15, f"run_node took {took:.1f}s with a {FLOOD_TIMEOUT_S}s agent timeout"
    assert grown[0] < 50 * 2**20, f"the process grew by {grown[0] / 2**20:.0f} MB"


@contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """The growth of this process's resident memory over the block, sampled every 50 ms
    (``ru_maxrss`` would carry the peak of an earlier test)."""
    me = psutil.Process()
    start = me.memory_info().rss
    grown = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            grown[0] = max(grown[0], me.memory_info().rss - start)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield grown
    finally:
        stop.set()
        sampler.join()


@pytest.mark.prefect
def test_a_flow_with_a_flooding_agent_ends_seconds_after_the_node(
    prefect_server: str, tmp_path: Path
) -> None:
    """A flow whose agent floods its output ends seconds after the node times out; Prefect gets the
    capped part in batched records, the node's log file every line."""
    from flows.graph_flow import tgflow_run
    from flows.run_context import RunObserver, observing

    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=FLOOD)})
    config = RunConfig(
        origin=str(origin), agent="scripted", validate_commands=["true"],
        agent_timeout_s=FLOOD_TIMEOUT_S, workspace_root=str(tmp_path / "ws"), retries=0,
    )  # fmt: skip

    with observing(RunObserver()) as watch:
        state = tgflow_run(config, return_state=True)
    ended = datetime.now(UTC)

    assert state.is_failed()
    assert isinstance(watch.record, RunRecord)
    (node,) = watch.record.nodes
    assert node.status is NodeStatus.TIMED_OUT, node.reason
    assert node.finished_at is not None
    lag = (ended - node.finished_at).total_seconds()
    assert lag < 10, f"the flow ended {lag:.0f}s after its last node"
    (run,) = [r for r in task_runs(state.state_details.flow_run_id) if r.name == "a"]
    deadline = time.monotonic() + 15  # logs reach the server in batches
    while not any("more lines in" in m for m in task_run_logs(run.id)):
        assert time.monotonic() < deadline, "Prefect's log does not say where the rest went"
        time.sleep(0.5)
    # The agent's lines only: tgflow's own records (a reason's tail, the traceback) vary.
    logs = task_run_logs(run.id)
    flooded = sum(line.startswith("xxx") for m in logs for line in m.splitlines())
    assert flooded < 5_100  # Prefect got the capped part only, in records of many lines
    assert len(logs) < 100
    node_log = next((tmp_path / "ws").rglob("logs/*/a.log"))
    assert sum(1 for _ in node_log.open()) > 5_000  # the node's log file got every line
