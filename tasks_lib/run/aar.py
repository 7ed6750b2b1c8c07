"""The after-action review of a run, written from its records: facts, and what to do about them.

Same template as the manual workflow (What Went Right / What Went Wrong / What Could Be
Better / Action Items). Every line comes from a number or a record; a section with nothing
to say says so in one line instead of padding.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from tasks_lib.run.records import NodeRecord, NodeStatus, RunRecord

LOW_UTILISATION = 0.6  # below this share of agent capacity in use, say why
POST_MERGE_MARKERS = ("after merg", "post-merge", "merged tree", "after the merge")


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def ran(node: NodeRecord) -> bool:
    """A node this run actually worked on (not already done, not skipped before starting)."""
    return not node.already_done and bool(node.attempts or node.sessions)


def peak_concurrency(nodes: list[NodeRecord]) -> int:
    """Most nodes that were running at the same moment (sweep over start/finish times)."""
    events: list[tuple[datetime, int]] = []
    for n in nodes:
        if ran(n) and n.finished_at is not None:
            events += [(n.started_at, 1), (n.finished_at, -1)]
    peak = current = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # a finish before a start
        current += delta
        peak = max(peak, current)
    return peak


def _makespan(run: RunRecord) -> float:
    return max((run.finished_at - run.started_at).total_seconds(), 1e-9)


def _longest_chain(run: RunRecord, durations: dict[str, float]) -> tuple[list[str], float]:
    """The chain of dependent nodes that took longest as run: no schedule finishes sooner."""
    best: dict[str, tuple[float, list[str]]] = {}

    def chain(task_id: str) -> tuple[float, list[str]]:
        if task_id not in best:
            before = [chain(d) for d in run.depends_on.get(task_id, []) if d in durations]
            seconds, ids = max(before, default=(0.0, []))
            best[task_id] = (seconds + durations[task_id], [*ids, task_id])
        return best[task_id]

    seconds, ids = max((chain(t) for t in durations), default=(0.0, []))
    return ids, seconds


def _changed_by(run: RunRecord) -> dict[str, list[str]]:
    """file -> ids of the nodes whose branches changed it."""
    found: dict[str, list[str]] = defaultdict(list)
    for n in run.nodes:
        for f in n.files_changed:
            found[f].append(n.task_id)
    return found


def _is_post_merge(node: NodeRecord) -> bool:
    text = " ".join([node.reason, *node.notes, *(a.reason for a in node.attempts)]).lower()
    return any(m in text for m in POST_MERGE_MARKERS)


def _overlap(a: NodeRecord, b: NodeRecord) -> bool:
    """Both ran, at some common moment (so neither could see the other's merged work)."""
    if a is b or not (ran(a) and ran(b)) or a.finished_at is None or b.finished_at is None:
        return False
    return a.started_at < b.finished_at and b.started_at < a.finished_at


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def write_aar(run: RunRecord) -> str:
    """The review as markdown."""
    nodes = run.nodes
    by_status: dict[NodeStatus, list[NodeRecord]] = defaultdict(list)
    for n in nodes:
        by_status[n.status].append(n)
    worked = [n for n in nodes if ran(n)]
    makespan = _makespan(run)
    agent_total = sum(n.agent_seconds for n in nodes)
    busy_total = sum(n.duration_s for n in worked)
    peak = run.max_concurrent or peak_concurrency(nodes)
    durations = {n.task_id: n.duration_s for n in worked}
    chain_ids, chain_time = _longest_chain(run, durations)
    changed_by = _changed_by(run)

    right: list[str] = []
    wrong: list[str] = []
    better: list[str] = []
    actions: list[str] = []

    completed = by_status[NodeStatus.COMPLETED]
    merged = [n for n in completed if not n.already_done]
    already = [n for n in completed if n.already_done]
    if merged:
        right.append(
            f"{len(merged)} node(s) completed, validated and merged in this run: "
            + ", ".join(n.task_id for n in merged)
            + "."
        )
    if already:
        right.append(
            f"{len(already)} node(s) were already completed on {run.base} and were not re-run: "
            + ", ".join(n.task_id for n in already)
            + "."
        )
    first_try = [n for n in merged if len(n.attempts) <= 1 and not n.conflicts]
    if first_try:
        right.append(
            f"{len(first_try)} of {len(merged)} merged node(s) passed on the first attempt "
            "without a merge conflict."
        )

    if worked:
        ratio = agent_total / makespan
        right.append(
            f"Parallelism: up to {peak} node(s) ran at once (limit {run.max_parallel}); "
            f"{_s(agent_total)} of agent time in a makespan of {_s(makespan)} "
            f"(average {ratio:.2f} agent sessions busy)."
        )
        utilisation = busy_total / (makespan * run.max_parallel)
        if utilisation < LOW_UTILISATION:
            better.append(
                f"Only {utilisation:.0%} of the {run.max_parallel} slots' time was used "
                f"({_s(busy_total)} of node time over {_s(makespan)}): the graph is narrower "
                "than the limit for much of the run."
            )
    if chain_ids:
        line = f"Makespan {_s(makespan)}"
        if run.critical_path:
            line += (
                f"; the planned critical path {' → '.join(run.critical_path)} "
                f"(estimated cost {run.critical_path_cost:g})"
            )
        line += (
            f"; the longest chain of dependent nodes as run, {' → '.join(chain_ids)}, "
            f"took {_s(chain_time)}."
        )
        if makespan > 1.5 * chain_time:
            better.append(
                line + f" The run took {_s(makespan - chain_time)} longer than that chain: "
                "nodes waited for a free slot or for the merge queue."
            )
        else:
            right.append(line)

    for n in by_status[NodeStatus.FAILED]:
        tries = f" after {len(n.attempts)} attempt(s)" if n.attempts else ""
        post = _is_post_merge(n)
        wrong.append(
            f"{n.task_id} failed{tries}"
            + (" (validation failed after merging into the base branch)" if post else "")
            + f": {_first_line(n.reason) or 'no reason recorded'}"
        )
        if post:
            actions.append(
                f"{n.task_id} passed on its branch but broke {run.base} once merged "
                "(the base branch was reset, nothing broken was pushed): it interacts with "
                "work merged before it; add that dependency to its depends_on, or add a "
                "test the branch validation catches."
            )
        else:
            actions.append(
                f"Fix what made {n.task_id} fail ({_first_line(n.reason) or 'see its log'}), "
                "then run again: only the unfinished nodes run."
            )
    for n in by_status[NodeStatus.BLOCKED]:
        wrong.append(f"{n.task_id} blocked: {n.reason or 'no reason given'}")
        actions.append(
            f"Answer {n.task_id}'s question in its Notes, then set its status to pending."
        )
    for n in by_status[NodeStatus.STALLED]:
        wrong.append(f"{n.task_id} stalled (no output within the idle timeout): {n.reason}")
    stalled = {n.task_id for n in nodes if any(a.status is NodeStatus.STALLED for a in n.attempts)}
    stalled |= {n.task_id for n in by_status[NodeStatus.STALLED]}
    if stalled:
        actions.append(
            f"Stalls in {', '.join(sorted(stalled))}: read the end of their logs for where "
            "the agent hung; if it was working silently, raise idle_timeout_s."
        )
    for n in by_status[NodeStatus.TIMED_OUT]:
        wrong.append(f"{n.task_id} timed out: {n.reason}")
        actions.append(
            f"{n.task_id} ran out of time: split it into smaller tasks or raise agent_timeout_s."
        )
    for n in by_status[NodeStatus.CANCELLED]:
        wrong.append(f"{n.task_id} was cancelled: {n.reason}")
    skipped = by_status[NodeStatus.SKIPPED]
    if skipped:
        reasons: dict[str, list[str]] = defaultdict(list)
        for n in skipped:
            reasons[n.reason].append(n.task_id)
        for reason, ids in reasons.items():
            wrong.append(f"Skipped {', '.join(ids)}: {reason}")

    for n in nodes:
        if len(n.attempts) > 1:
            history = "; ".join(
                f"attempt {a.number} {a.status.value}"
                + (f" ({_first_line(a.reason)})" if a.reason else "")
                for a in n.attempts
            )
            outcome = "and then completed" if n.status is NodeStatus.COMPLETED else "and still"
            end = "" if n.status is NodeStatus.COMPLETED else f" {n.status.value}"
            wrong.append(f"{n.task_id} needed {len(n.attempts)} attempts {outcome}{end}: {history}")
            if n.status is NodeStatus.COMPLETED:
                actions.append(
                    f"{n.task_id} passed only on attempt {len(n.attempts)}: make its "
                    "acceptance criteria or validation commands say up front what the first "
                    "attempt missed, or fix the flaky step."
                )

    by_id = {n.task_id: n for n in nodes}
    met: dict[str, set[str]] = defaultdict(set)  # file -> nodes that met there in parallel
    for n in nodes:
        for c in n.conflicts:
            state = "resolved by the agent" if c.resolved else "NOT resolved"
            wrong.append(
                f"{n.task_id} hit a merge conflict (round {c.round}) in {', '.join(c.files)}, "
                f"{state}."
            )
            for f in c.files:
                met[f].add(n.task_id)
                met[f].update(o for o in changed_by.get(f, []) if _overlap(n, by_id[o]))
    for f, ids in sorted(met.items()):
        if len(ids) > 1:
            actions.append(
                f"{_and(sorted(ids))} changed {f} at the same time: sequence them (depends_on) "
                f"or split {f} so parallel tasks stop meeting there."
            )
        else:
            actions.append(
                f"{next(iter(ids))} conflicted in {f} with work merged while it ran: sequence "
                f"the tasks that change {f}, or split it."
            )

    leftovers = [
        f"{n.task_id}: {what}" for n in nodes for what, removed in n.cleanup.items() if not removed
    ]
    cleaned = [n for n in nodes if n.cleanup and all(n.cleanup.values())]
    if leftovers:
        wrong.append("Cleanup left behind: " + "; ".join(leftovers) + ".")
        actions.append(
            "Remove what cleanup left (git worktree prune; git branch -D / git push origin "
            "--delete tgflow/<task>) and check why: " + "; ".join(leftovers) + "."
        )
    elif cleaned:
        right.append(
            f"Cleanup: worktrees and task branches (local and remote) removed for "
            f"{len(cleaned)} node(s), nothing left behind."
        )

    validate_total = sum(n.validate_seconds for n in nodes)
    if worked and validate_total > agent_total > 0:
        better.append(
            f"Validation took {_s(validate_total)}, more than the agents' {_s(agent_total)}: "
            "a faster test command would shorten every node and the merge queue."
        )
    if worked:
        slowest = max(worked, key=lambda n: n.duration_s)
        better.append(
            f"Slowest node: {slowest.task_id}, {_s(slowest.duration_s)} "
            f"({_s(slowest.agent_seconds)} agent, {_s(slowest.validate_seconds)} validation)."
        )
    tokens = [n for n in nodes if n.tokens_in is not None or n.tokens_out is not None]
    costs = [n.cost_usd for n in nodes if n.cost_usd is not None]
    if tokens:
        t_in = sum(n.tokens_in or 0 for n in tokens)
        t_out = sum(n.tokens_out or 0 for n in tokens)
        line = f"Tokens: {t_in} in, {t_out} out over {len(tokens)} node(s)"
        line += f"; cost ${sum(costs):.4f}." if costs else "; cost not reported by the agent."
        better.append(line)
    elif worked:
        better.append("Tokens and cost: not reported by this agent.")
    tool_errors = sum(n.tool_errors for n in nodes)
    if tool_errors:
        noisy = ", ".join(f"{n.task_id} ({n.tool_errors})" for n in nodes if n.tool_errors)
        better.append(f"{tool_errors} tool error(s) reported by agents: {noisy}.")

    total = len(nodes)
    head = [
        f"# AAR: {run.run_name}",
        "",
        f"Origin `{run.origin}`, base `{run.base}`; {run.started_at:%Y-%m-%d %H:%M:%S} → "
        f"{run.finished_at:%H:%M:%S} UTC ({_s(makespan)}). {total} node(s): "
        + ", ".join(f"{len(v)} {k.value}" for k, v in sorted(by_status.items()) if v)
        + ".",
    ]

    def section(title: str, lines: list[str], empty: str) -> list[str]:
        return ["", f"## {title}", "", *([f"- {x}" for x in lines] or [empty])]

    return (
        "\n".join(
            [
                *head,
                *section("What Went Right", right, "Nothing completed in this run."),
                *section(
                    "What Went Wrong", wrong, "Nothing: no failures, retries, conflicts or stalls."
                ),
                *section("What Could Be Better", better, "Nothing measured stands out."),
                *section(
                    "Action Items",
                    [f"[ ] {a}" for a in actions],
                    "None: nothing failed, conflicted, stalled or was left behind.",
                ),
            ]
        )
        + "\n"
    )
