"""The after-action review states the run's facts and turns them into action items."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks_lib.run.aar import WRONG, Line, conflicts, peak_concurrency, skipped, write_aar
from tasks_lib.run.records import (
    Attempt,
    Conflict,
    NodeRecord,
    NodeStatus,
    RunRecord,
    UsageWait,
)

T0 = datetime(2026, 11, 3, 10, 0, 0, tzinfo=UTC)


def node(task_id: str, status: NodeStatus, start: float, end: float, **kw: object) -> NodeRecord:
    attempts = kw.pop("attempts", [Attempt(number=1, status=status)])
    return NodeRecord(
        task_id=task_id,
        status=status,
        started_at=T0 + timedelta(seconds=start),
        finished_at=T0 + timedelta(seconds=end),
        attempts=attempts,
        **kw,
    )


def run(nodes: list[NodeRecord], seconds: float = 100, **kw: object) -> RunRecord:
    return RunRecord(
        run_name="demo-run",
        origin="/tmp/origin.git",
        base="main",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=seconds),
        max_parallel=2,
        nodes=nodes,
        **kw,
    )


def sections(text: str) -> dict[str, str]:
    parts = text.split("\n## ")
    return {p.split("\n", 1)[0]: p.split("\n", 1)[1] for p in parts[1:]}


def test_a_troubled_run_names_its_conflicts_retries_failures_and_leftovers() -> None:
    nodes = [
        node(
            "core",
            NodeStatus.COMPLETED,
            0,
            30,
            agent_seconds=25,
            files_changed=["lib/a.py"],
            cleanup={"worktree": True, "branch": True},
        ),
        node(
            "stats",
            NodeStatus.COMPLETED,
            0,
            60,
            agent_seconds=40,
            files_changed=["lib/a.py", "tests/test_a.py"],
            conflicts=[Conflict(round=1, files=["lib/a.py"], resolved=True)],
            attempts=[
                Attempt(number=1, status=NodeStatus.FAILED, reason="tests failed: 2 errors"),
                Attempt(number=2, status=NodeStatus.COMPLETED),
            ],
            cleanup={"worktree": True, "branch": False},
        ),
        node(
            "report",
            NodeStatus.FAILED,
            30,
            70,
            agent_seconds=20,
            reason="validation failed after merging into main: test_report failed",
        ),
        node("slow", NodeStatus.STALLED, 60, 90, reason="no output for 300 s"),
        node("ask", NodeStatus.BLOCKED, 70, 75, reason="which file format? (see Notes)"),
        NodeRecord(task_id="final", status=NodeStatus.SKIPPED, reason="upstream report failed: x"),
    ]
    text = write_aar(
        run(
            nodes,
            critical_path=["core", "report"],
            critical_path_cost=6,
            depends_on={"report": ["core", "stats"], "final": ["report"]},
        )
    )
    s = sections(text)
    assert text.startswith("# AAR: demo-run\n")
    assert list(s) == ["What Went Right", "What Went Wrong", "What Could Be Better", "Action Items"]
    wrong, actions = s["What Went Wrong"], s["Action Items"]
    assert "stats hit a merge conflict (round 1) in lib/a.py, resolved by the agent" in wrong
    assert "stats needed 2 attempts and then completed: attempt 1 failed (tests failed" in wrong
    assert "report failed after 1 attempt(s) (validation failed after merging" in wrong
    assert "slow stalled" in wrong and "ask blocked: which file format?" in wrong
    assert "Skipped final: upstream report failed: x" in wrong
    assert "Cleanup left behind: stats: branch" in wrong
    assert (
        "core and stats changed lib/a.py at the same time: sequence them (depends_on) or split"
        in actions
    )
    assert "raise idle_timeout_s" in actions
    assert "Answer ask's question in its Notes" in actions
    assert "report passed on its branch but broke main once merged" in actions
    right = s["What Went Right"]
    assert "up to 2 node(s) ran at once (limit 2 agent sessions" in right
    assert "85.0 s of agent time in a makespan of 100.0 s" in right
    assert (
        "Makespan 100.0 s; the planned critical path core → report (estimated cost 6); the "
        "longest chain of dependent nodes as run, stats → report, took 100.0 s." in right
    )


def test_waiting_for_slots_is_measured_against_the_longest_chain_as_run() -> None:
    # a and b are independent but ran one after the other: one slot, or the merge queue
    nodes = [
        node("a", NodeStatus.COMPLETED, 0, 10, agent_seconds=9),
        node("b", NodeStatus.COMPLETED, 10, 20, agent_seconds=9),
        node("c", NodeStatus.COMPLETED, 20, 22, agent_seconds=1),
    ]
    s = sections(write_aar(run(nodes, seconds=22, depends_on={"c": ["a"]})))
    assert (
        "the longest chain of dependent nodes as run, a → c, took 12.0 s. The run took 10.0 s "
        "longer than that chain: nodes waited for a free slot or for the merge queue."
        in s["What Could Be Better"]
    )


def test_a_clean_run_says_so_without_filler() -> None:
    nodes = [
        node(
            "a",
            NodeStatus.COMPLETED,
            0,
            10,
            agent_seconds=8,
            cleanup={"worktree": True, "branch": True, "remote_branch": True},
        ),
        node(
            "b",
            NodeStatus.COMPLETED,
            0,
            10,
            agent_seconds=8,
            cleanup={"worktree": True, "branch": True},
        ),
        NodeRecord(task_id="old", status=NodeStatus.COMPLETED, already_done=True),
    ]
    s = sections(write_aar(run(nodes, seconds=11)))
    assert "2 node(s) completed, validated and merged in this run: a, b." in s["What Went Right"]
    assert "already completed on main and were not re-run: old" in s["What Went Right"]
    assert "removed for 2 node(s), nothing left behind" in s["What Went Right"]
    assert s["What Went Wrong"].strip() == "Nothing: no failures, retries, conflicts or stalls."
    assert s["Action Items"].strip().startswith("None:")


def test_peak_concurrency_counts_overlaps_only() -> None:
    nodes = [
        node("a", NodeStatus.COMPLETED, 0, 10),
        node("b", NodeStatus.COMPLETED, 5, 15),
        node("c", NodeStatus.COMPLETED, 10, 20),  # starts as a ends: not three at once
        node("d", NodeStatus.COMPLETED, 12, 13),
    ]
    assert peak_concurrency(nodes) == 3


def test_each_rule_is_a_finding_on_its_own() -> None:
    """A rule reads only the record: it can be checked without writing the whole review."""
    nodes = [
        NodeRecord(task_id="x", status=NodeStatus.SKIPPED, reason="upstream a failed"),
        NodeRecord(task_id="y", status=NodeStatus.SKIPPED, reason="upstream a failed"),
    ]
    assert skipped(run(nodes)) == [Line(WRONG, "Skipped x, y: upstream a failed")]
    assert conflicts(run(nodes)) == []


def test_the_merge_queue_says_what_it_saved() -> None:
    text = write_aar(
        run(
            [
                node("a", NodeStatus.COMPLETED, 0, 10, merged_with=["b"]),
                node("b", NodeStatus.COMPLETED, 0, 10, merged_with=["a"]),
                node("c", NodeStatus.COMPLETED, 0, 20, validation_skipped=True),
                node("d", NodeStatus.COMPLETED, 0, 20, validated_ahead=True),
            ]
        )
    )
    right = sections(text)["What Went Right"]
    assert "Merge queue: 2 branch(es) landed in 1 batch(es)" in right
    assert "Post-merge validation skipped for c: the merged tree was the one validated" in right
    assert "Validated ahead: d, at the same time as the batch before" in right


def test_a_node_pool_run_says_where_nodes_ran_and_which_lost_their_machine() -> None:
    lost = "its node run a crashed (no heartbeat for 90 s); started again, from its checkpoint"
    text = write_aar(
        run(
            [
                node("a", NodeStatus.COMPLETED, 0, 10, ran_on="box:/w2", notes=[lost]),
                node("b", NodeStatus.COMPLETED, 0, 10, ran_on="box:/w1"),
                node("c", NodeStatus.COMPLETED, 0, 20, ran_on="box:/w2"),
            ]
        )
    )
    found = sections(text)
    assert "Nodes ran on 2 machine(s): box:/w1 (1), box:/w2 (2)." in found["What Went Right"]
    assert (
        "a lost its machine 1 time(s) and started again elsewhere from its checkpoint: "
        f"{lost}" in found["What Went Wrong"]
    )
    assert "machine" not in write_aar(run([node("d", NodeStatus.COMPLETED, 0, 5)]))


def test_nodes_that_waited_for_a_usage_limit_say_how_long_and_for_whom() -> None:
    until = T0 + timedelta(seconds=50)
    waits = [UsageWait(provider="https://api.example/v1", seconds=40, until=until, said=True)]
    nodes = [
        node("a", NodeStatus.COMPLETED, 0, 80, usage_waits=waits),
        node("b", NodeStatus.COMPLETED, 0, 30),
    ]

    found = sections(write_aar(run(nodes)))

    assert (
        "1 node(s) paused for a provider's usage limit and went on after the reset: a 40.0 s "
        "for https://api.example/v1 (resets said by the provider)."
    ) in found["What Could Be Better"]
    assert "lower max_parallel" in found["Action Items"]
