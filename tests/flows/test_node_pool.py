"""Nodes on many machines (``--node-pool``): one run's nodes spread over three Prefect workers
that share nothing (each its own HOME, PREFECT_HOME and temporary folder: its own clone of the
origin), behind a real Prefect server on a real Postgres. Merges never overlap, a machine that
dies mid-session loses nothing, and a cancel reaches every machine."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.gitrepos import git, make_origin, show, task_md
from helpers.uiharness import TERMINAL, Api

from bench.cluster import Machine, machines, node_record, node_runs, prefect_on_postgres
from deployments.definitions import FLOW_NAME, MANUAL
from flows.postgres import postgres_problem
from flows.prefect_server import LocalPrefect
from tasks_lib.agents.process import group_alive

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
TGFLOW = str(Path(sys.executable).parent / "tgflow")
POOL = "tgflow-nodes"
WORKERS = 3
VALIDATE = 'for f in *.txt; do test -s "$f" || exit 1; done'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefect]:
    """A Prefect server on a private Postgres."""
    problem = postgres_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI must install Postgres: make tools)")
        pytest.skip(problem)
    with prefect_on_postgres(tmp_path_factory.mktemp("node-pool-server")) as local:
        yield local


@pytest.fixture
def workers(server: LocalPrefect, tmp_path: Path) -> Iterator[list[Machine]]:
    with machines(server, POOL, tmp_path, WORKERS, limit=2) as started:
        yield started


def run(origin: Path, tmp: Path, server: LocalPrefect, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PREFECT_API_URL": server.api_url}
    return subprocess.Popen(
        [TGFLOW, "run", "--origin", str(origin), "--workspace", str(tmp / "run-machine"),
         "--agent", "scripted", "--validate", VALIDATE, "--sandbox", "none",
         "--node-pool", POOL, "--retries", "0", *extra],
        cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def review(origin: Path) -> str:
    """The run's review, on main."""
    [name] = [
        n
        for n in git(origin, "ls-tree", "--name-only", "main", "docs/aar/").split()
        if n.endswith(".md")
    ]
    return show(origin, name)


def run_graph_edges(api: Api, flow_run_id: str) -> set[tuple[str, str]]:
    """(upstream, downstream) edges of the run graph the UI draws (its graph-v2)."""
    nodes = [
        node for _, node in api.ok(api.http.get(f"/flow_runs/{flow_run_id}/graph-v2"))["nodes"]
    ]
    names = {n["id"]: n["label"] for n in nodes}
    return {(names[p["id"]], n["label"]) for n in nodes for p in n["parents"] if p["id"] in names}


def leftover_refs(origin: Path) -> list[str]:
    refs = git(origin, "for-each-ref", "--format=%(refname)").split()
    return [r for r in refs if r != "refs/heads/main"]


def test_twelve_nodes_run_on_three_machines_and_their_merges_never_overlap(
    server: LocalPrefect, workers: list[Machine], tmp_path: Path
) -> None:
    roots = [f"r{n}" for n in range(4)]
    ids = [*roots, *(f"c{n}" for n in range(8))]
    files = {"README.md": "demo\n"}
    for task_id in ids:
        deps = [] if task_id in roots else [roots[int(task_id[1:]) % 4]]
        steps = [{"write": {"path": f"{task_id}.txt", "content": f"{task_id}\n"}}, {"sleep": 2}]
        files[f"tasks/{task_id}.md"] = task_md(task_id, steps=steps, depends_on=deps)
    origin = make_origin(tmp_path, files)

    proc = run(origin, tmp_path, server, "--max-parallel", "6")
    out, _ = proc.communicate(timeout=800)

    assert proc.returncode == 0, out
    runs = node_runs(server.api_url, origin)
    assert sorted(r["name"] for r in runs) == sorted(ids)  # one node run per node, no restart
    records = [node_record(r) for r in runs]
    assert all(r.status.value == "completed" for r in records), records
    for machine in workers:
        assert any(str(machine.home) in (r.ran_on or "") for r in records), (
            f"no node ran on {machine.name}: {[r.ran_on for r in records]}"
        )
    spans = sorted((r.merge_began, r.merge_ended) for r in records)
    for (_, ended), (began, _) in itertools.pairwise(spans):
        assert ended is not None and began is not None and ended <= began, spans
    gaps = [(b - e).total_seconds() for (_, e), (b, _) in itertools.pairwise(spans)]
    print(f"merge hand-off gaps (s): {sorted(round(g, 2) for g in gaps)}")
    api = Api(server.api_url)
    [graph_run] = {
        api.ok(api.http.get(f"/task_runs/{r['parent_task_run_id']}"))["flow_run_id"] for r in runs
    }
    edges = run_graph_edges(api, graph_run)
    assert all((roots[n % 4], f"c{n}") in edges for n in range(8)), edges  # depends_on, drawn
    aar = review(origin)
    assert f"Nodes ran on {WORKERS} machine(s)" in aar, aar
    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    subprocess.run(["sh", "-c", VALIDATE], cwd=clone, check=True)
    assert all((clone / f"{t}.txt").read_text() == f"{t}\n" for t in [*roots, "c0", "c7"])
    assert leftover_refs(origin) == []
    shutil.rmtree(clone)


def test_a_machine_killed_mid_session_loses_nothing_its_node_resumes_elsewhere(
    server: LocalPrefect, workers: list[Machine], tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    commit = "git add -A && { git diff --cached --quiet || git commit -q -m 'a: first half'; }"
    steps: list[dict] = [
        {"write": {"path": "a.txt", "content": "a\n"}},
        {"run": commit},
        {"run": f"echo $HOME > {marks}/a.home; test -e {marks}/killed || sleep 600"},
        {"write": {"path": "a2.txt", "content": "a2\n"}},
    ]
    origin = make_origin(tmp_path, {"README.md": "demo\n", "tasks/a.md": task_md("a", steps=steps)})
    proc = run(origin, tmp_path, server, "--max-parallel", "1")
    checkpoint = "refs/tgflow/checkpoint/a"
    deadline = time.monotonic() + 300
    while not (git(origin, "for-each-ref", checkpoint) and (marks / "a.home").exists()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.5)
    agent_commit = git(origin, "rev-parse", checkpoint)
    home = Path((marks / "a.home").read_text().strip())
    [victim] = [m for m in workers if m.home == home]
    victim.kill()
    (marks / "killed").touch()

    out, _ = proc.communicate(timeout=600)

    assert proc.returncode == 0, out
    assert show(origin, "a.txt") == "a" and show(origin, "a2.txt") == "a2"
    merged = git(origin, "log", "--format=%H", "main")
    assert agent_commit in merged.split(), "the agent's commit before the kill is not on main"
    first, again = node_runs(server.api_url, origin)
    assert first["state"]["type"] == "CRASHED", first["state"]  # marked by its silence
    ran_on = node_record(again).ran_on or ""
    assert again["name"] == "a (restart 1)" and str(victim.home) not in ran_on, ran_on
    aar = review(origin)
    assert "a lost its machine 1 time(s)" in aar, aar
    assert leftover_refs(origin) == []


def test_cancel_from_the_ui_ends_every_node_run_cancelled_and_no_agent_survives(
    server: LocalPrefect, workers: list[Machine], tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    files = {"README.md": "demo\n"}
    for task_id in ("a", "b", "c"):
        steps: list[dict] = [
            {
                "run": f"python3 -c 'import os; print(os.getpgrp())' > {marks}/{task_id}.tmp "
                f"&& mv {marks}/{task_id}.tmp {marks}/{task_id}.pgid"
            },  # whole, once seen
            {"run": "sleep 600"},
        ]
        files[f"tasks/{task_id}.md"] = task_md(task_id, steps=steps)
    origin = make_origin(tmp_path, files)
    server.deploy()
    server.start_workers(["tgflow-process"])  # the run's own worker, on the server's machine
    api = Api(server.api_url)
    manual = api.deployment(FLOW_NAME, MANUAL)
    form = manual["parameter_openapi_schema"]["definitions"]["RunConfig"]["properties"]
    assert "node_pool" in form  # a field of the UI's run form
    run_id = api.run_deployment(
        manual["id"],
        {"config": {"origin": str(origin), "workspace_root": str(tmp_path / "run-machine"),
                    "agent": "scripted", "validate_commands": [VALIDATE], "sandbox": "none",
                    "node_pool": POOL, "retries": 0, "max_parallel": 3}},
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not all((marks / f"{t}.pgid").exists() for t in "abc"):
        assert time.monotonic() < deadline, f"the agents never all started: {api.state(run_id)}"
        time.sleep(0.5)
    groups = {t: int((marks / f"{t}.pgid").read_text()) for t in "abc"}
    assert all(group_alive(g) for g in groups.values())

    api.cancel(run_id)

    assert api.wait(run_id, TERMINAL, timeout_s=180)[0] == "CANCELLED"
    ours = node_runs(server.api_url, origin)
    deadline = time.monotonic() + 120
    while {api.state(n["id"])[0] for n in ours} != {"CANCELLED"}:
        assert time.monotonic() < deadline, [(n["name"], api.state(n["id"])) for n in ours]
        time.sleep(1.0)
    assert sorted(n["name"] for n in ours) == ["a", "b", "c"]
    assert not [t for t, g in groups.items() if group_alive(g)], "an agent survived the cancel"


def test_cancelling_one_node_run_leaves_the_other_nodes_completing(
    server: LocalPrefect, workers: list[Machine], tmp_path: Path
) -> None:
    """h is cancelled with its own flow run's Cancel button, m by a person's message to the
    run; each ends cancelled with its work kept, d (after h) is skipped, i completes."""
    marks = tmp_path / "marks"
    marks.mkdir()
    files = {"README.md": "demo\n"}
    for task_id in ("h", "m"):
        steps: list[dict] = [
            {"write": {"path": f"{task_id}.txt", "content": f"{task_id}'s unfinished work\n"}},
            {"run": f"touch {marks}/{task_id}.started"},
            {"hang": True},
        ]
        files[f"tasks/{task_id}.md"] = task_md(task_id, steps=steps)
    for task_id, deps in (("d", ["h"]), ("i", [])):
        steps = [{"write": {"path": f"{task_id}.txt", "content": f"{task_id}\n"}}]
        files[f"tasks/{task_id}.md"] = task_md(task_id, steps=steps, depends_on=deps)
    origin = make_origin(tmp_path, files)
    proc = run(origin, tmp_path, server, "--max-parallel", "3", "--json")
    deadline = time.monotonic() + 300
    while not all((marks / f"{t}.started").exists() for t in "hm"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.5)
    api = Api(server.api_url)
    started = {r["name"]: r for r in node_runs(server.api_url, origin)}
    assert api.state(started["h"]["id"])[0] == "RUNNING"
    graph_run = api.ok(api.http.get(f"/task_runs/{started['m']['parent_task_run_id']}"))[
        "flow_run_id"
    ]

    api.cancel(started["h"]["id"])  # the Cancel button on h's own flow run page
    message = {"key": "tgflow-node-1", "value": json.dumps({"task_id": "m", "cancel": True})}
    api.ok(api.http.post(f"/flow_runs/{graph_run}/input", json=message))

    out, _ = proc.communicate(timeout=400)
    assert proc.returncode != 0, out
    [report] = [json.loads(line) for line in out.splitlines() if line.startswith('{"run"')]
    statuses = {row["task"]: row["status"] for row in report["nodes"]}
    assert statuses == {"h": "cancelled", "m": "cancelled", "d": "skipped", "i": "completed"}, out
    assert report["message"].startswith(
        "3 of 4 nodes did not complete (2 cancelled, 1 skipped): "
    ), report["message"]
    assert set(report["message"].rsplit(": ", 1)[1].split(", ")) == {"h", "m", "d"}
    reasons = {row["task"]: row["reason"] for row in report["nodes"]}
    assert reasons["h"] == reasons["m"] == "agent cancelled: cancelled"  # the node's own record
    for task_id in ("h", "m"):  # the unfinished work, committed and on the origin
        assert show(origin, f"{task_id}.txt", f"tgflow/{task_id}") == f"{task_id}'s unfinished work"
        assert "status: pending" in show(origin, f"tasks/{task_id}.md")  # a cancel is no failure
    assert show(origin, "i.txt") == "i"
    assert api.state(graph_run)[0] == "FAILED"  # the run went on: it was not cancelled
    ended = {r["name"]: r["state"]["type"] for r in node_runs(server.api_url, origin)}
    assert ended == {"h": "CANCELLED", "m": "CANCELLED", "i": "COMPLETED"}  # none restarted
    body = {"prefix": "tgflow-reply", "limit": 10}
    [reply] = api.ok(api.http.post(f"/flow_runs/{graph_run}/input/filter", json=body))
    said = json.loads(reply["value"])
    assert said["delivered"], said
    assert said["said"].startswith(f"cancelling m (its node run on pool {POOL})"), said
