"""`tgflow run` piped into a log or CI: a plain table that never wraps, or JSON for machines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers.gitrepos import make_origin, task_md

from tgflow_cli.main import main

pytestmark = pytest.mark.prefect

LONG = "the failure message is long enough that an eighty column table would fold it " * 2


CHECK = "if [ -f bad.txt ]; then cat bad.txt; exit 1; fi"  # bad-node's work fails validation


@pytest.fixture(autouse=True)
def _quiet_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the command sets in os.environ is undone after the test."""
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


def origin_of(tmp_path: Path) -> Path:
    return make_origin(
        tmp_path,
        {
            ".tgflow.toml": "retries = 0\n",
            "tasks/good-node.md": task_md(
                "good-node", steps=[{"write": {"path": "g.txt", "content": "ok\n"}}]
            ),
            "tasks/bad-node.md": task_md(
                "bad-node", steps=[{"write": {"path": "bad.txt", "content": LONG + "\n"}}]
            ),
        },
    )


def test_piped_output_is_one_unwrapped_line_per_node_with_validation_time(
    prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = origin_of(tmp_path)
    argv = ["run", "--origin", str(origin), "--workspace", str(tmp_path / "ws")]
    assert main([*argv, "--agent", "scripted", "--validate", f"{CHECK}; sleep 0.2"]) == 1
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["task", "status"])
    columns = re.split(r" {2,}", header.strip())
    assert "validate_s" in columns
    rows = lines[lines.index(header) + 1 :]
    good = next(line for line in rows if line.startswith("good-node "))
    bad = next(line for line in rows if line.startswith("bad-node "))
    assert LONG.strip() in bad  # the whole first line of the reason, on the node's own line
    cells = re.split(r" {2,}", good.strip())
    assert float(cells[columns.index("validate_s")]) >= 0.2


def test_json_prints_the_nodes_and_nothing_else(
    prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = origin_of(tmp_path)
    argv = ["run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"), "--json"]
    argv += ["--agent", "scripted", "--validate", CHECK]
    assert main(argv) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "failed" and out["aar_path"].startswith("docs/aar/")
    nodes = {row["task"]: row for row in out["nodes"]}
    assert nodes["good-node"]["status"] == "completed" and "validate_s" in nodes["good-node"]
    assert nodes["bad-node"]["status"] == "failed"


def test_the_terminal_table_has_the_validation_time_too() -> None:
    from datetime import UTC, datetime

    from rich.console import Console

    from tasks_lib.run.records import NodeRecord, NodeStatus
    from tgflow_cli.progress import final_table

    now = datetime.now(UTC)
    record = NodeRecord(
        task_id="a", status=NodeStatus.COMPLETED, started_at=now, validate_seconds=4.2
    )
    console = Console(record=True, width=160)
    console.print(final_table([record.close_attempt(1)]))
    text = console.export_text()
    assert "valid. s" in text and "4.2" in text


def test_the_terminal_table_shows_what_was_spent_against_the_budget() -> None:
    from rich.console import Console

    from tasks_lib.run.budget import Budget
    from tasks_lib.run.records import NodeRecord, NodeStatus
    from tgflow_cli.progress import final_table

    spent = NodeRecord(
        task_id="a", status=NodeStatus.FAILED, tokens_in=300, tokens_out=30,
        budget=Budget(budget_tokens=250), reason="budget: 330 tokens spent of 250",
    )  # fmt: skip
    console = Console(record=True, width=200)
    console.print(final_table([spent.close_attempt(1)]))
    lines = console.export_text().splitlines()
    header, row = next(x for x in lines if "task" in x), next(x for x in lines if " a " in x)
    cells = {h.strip(): c.strip() for h, c in zip(header.split("┃"), row.split("│"), strict=True)}
    assert (cells["tokens"], cells["budget"]) == ("330", "250 tokens")
    console.print(final_table([NodeRecord(task_id="b", status=NodeStatus.COMPLETED)]))
    assert "budget" not in console.export_text()
