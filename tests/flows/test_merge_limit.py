"""Merges serialised across processes: two `tgflow run`s on two workspaces ("machines") of
one origin, reporting to one Prefect server with `--merge-lock prefect`, never hold the merge
at the same time, though both reach it at the same moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from helpers.gitrepos import git, make_origin, show, task_md

from flows.merge_limit import limit_name

ROOT = Path(__file__).resolve().parents[2]
TGFLOW = Path(sys.executable).parent / "tgflow"  # the tgflow of the venv running the tests


def branch_gate(tmp: Path) -> str:
    """On a task branch: say so, then wait for the test's gate (both reach the merge at once)."""
    return f"""
case "$(basename "$PWD")" in
  a|b) touch {tmp}/validating-$(basename "$PWD")
       while [ ! -e {tmp}/gate ]; do sleep 0.05; done ;;
esac
sleep 1
"""


@pytest.mark.prefect
def test_two_runs_on_two_machines_take_turns_to_merge(prefect_server: str, tmp_path: Path) -> None:
    origin = make_origin(
        tmp_path,
        {
            "README.md": "demo\n",
            "tasks/a.md": task_md("a", steps=[{"write": {"path": "a.txt", "content": "a\n"}}]),
            "tasks/b.md": task_md("b", steps=[{"write": {"path": "b.txt", "content": "b\n"}}]),
        },
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_server}

    def run(task_id: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                str(TGFLOW), "run", "--origin", str(origin),
                "--workspace", str(tmp_path / f"machine-{task_id}"), "--only", task_id,
                "--agent", "scripted", "--validate", branch_gate(tmp_path),
                "--sandbox", "none", "--merge-lock", "prefect", "--retries", "0",
            ],
            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    runs = [run("a"), run("b")]
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"validating-{i}").exists() for i in "ab"):
        assert time.monotonic() < deadline, [p.poll() for p in runs]
        time.sleep(0.1)
    (tmp_path / "gate").touch()
    outputs = [p.communicate(timeout=300)[0] for p in runs]

    assert [p.returncode for p in runs] == [0, 0], outputs
    assert show(origin, "a.txt") == "a" and show(origin, "b.txt") == "b"
    held = {}
    for name in git(origin, "ls-tree", "--name-only", "main", "docs/aar/").split():
        if name.endswith(".json"):
            for node in json.loads(show(origin, name))["nodes"]:
                held[node["task_id"]] = (
                    datetime.fromisoformat(node["merge_began"]),
                    datetime.fromisoformat(node["merge_ended"]),
                )
    (a_began, a_ended), (b_began, b_ended) = held["a"], held["b"]
    assert a_ended <= b_began or b_ended <= a_began, held  # one after the other
    gap = (max(a_began, b_began) - min(a_ended, b_ended)).total_seconds()
    print(f"hand-off gap between the two merges: {gap:.3f} s")

    from prefect import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(limit_name(str(origin)))
    assert limit.limit == 1 and limit.active_slots == 0
