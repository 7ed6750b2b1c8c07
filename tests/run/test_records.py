"""A node's record over its attempts: a retried node reports what every attempt cost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks_lib.run.records import Attempt, Conflict, NodeRecord, NodeStatus, combine

START = datetime(2026, 1, 1, tzinfo=UTC)


def attempt(number: int, status: NodeStatus, conflict: str | None = None) -> NodeRecord:
    """What one try reports on its own fresh record, as a Prefect retry starts with one."""
    record = NodeRecord(
        task_id="flaky",
        status=status,
        reason="" if status is NodeStatus.COMPLETED else f"attempt {number} failed",
        started_at=START + timedelta(minutes=10 * number),
        agent_seconds=10.0 * number,
        validate_seconds=1.0 * number,
        sessions=number,
        tokens_in=100 * number,
        tokens_out=10 * number,
        cost_usd=0.25 * number,
        tool_errors=number,
        conflicts=[Conflict(round=1, files=[conflict])] if conflict else [],
        notes=[f"note of attempt {number}"],
    )
    return record.close_attempt(number)


def retried_twice() -> NodeRecord:
    earlier: list[Attempt] = []
    record = None
    for number, status, conflict in (
        (1, NodeStatus.FAILED, "A.md"),
        (2, NodeStatus.STALLED, None),
        (3, NodeStatus.COMPLETED, "B.md"),
    ):
        record = combine(earlier, attempt(number, status, conflict))
        earlier = record.attempts
    assert record is not None
    return record


def test_a_node_retried_twice_reports_the_sum_of_all_three_attempts() -> None:
    record = retried_twice()
    assert [a.number for a in record.attempts] == [1, 2, 3]
    assert [a.status for a in record.attempts] == [
        NodeStatus.FAILED,
        NodeStatus.STALLED,
        NodeStatus.COMPLETED,
    ]
    assert record.status is NodeStatus.COMPLETED and record.reason == ""
    assert record.agent_seconds == 10.0 + 20.0 + 30.0
    assert record.validate_seconds == 1.0 + 2.0 + 3.0
    assert record.sessions == 1 + 2 + 3
    assert record.tokens_in == 100 + 200 + 300
    assert record.tokens_out == 10 + 20 + 30
    assert record.cost_usd == 0.25 + 0.5 + 0.75
    assert record.tool_errors == 1 + 2 + 3
    assert [c.files for c in record.conflicts] == [["A.md"], ["B.md"]]
    assert record.notes == [f"note of attempt {n}" for n in (1, 2, 3)]
    assert record.started_at == START + timedelta(minutes=10)  # when the first try began


def test_each_attempt_keeps_its_own_measures() -> None:
    second = retried_twice().attempts[1]
    assert (second.reason, second.sessions, second.tokens_in, second.cost_usd) == (
        "attempt 2 failed",
        2,
        200,
        0.5,
    )
    assert second.tool_errors == 2 and second.notes == ["note of attempt 2"]


def test_unmeasured_tokens_and_cost_stay_unknown_rather_than_zero() -> None:
    bare = NodeRecord(task_id="x", status=NodeStatus.FAILED).close_attempt(1)
    again = combine(
        bare.attempts, NodeRecord(task_id="x", status=NodeStatus.FAILED).close_attempt(2)
    )
    assert again.tokens_in is None and again.tokens_out is None and again.cost_usd is None
    assert len(again.attempts) == 2 and again.tool_errors == 0
