"""The after-action review of a run, written from its records: facts, and what to do about them.

Same template as the manual workflow (What Went Right / What Went Wrong / What Could Be
Better / Action Items). Every line comes from a number or a record; a section with nothing
to say says so in one line instead of padding.

Each finding is one rule: a pure function of the ``RunRecord`` giving the lines it adds,
each tagged with its section, so a finding is read, tested and changed in one place.
``RULES`` orders them; within a section, lines appear in rule order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from tasks_lib.run.budget import RUN_SPENT, run_overspent
from tasks_lib.run.records import Attempt, Cause, NodeRecord, NodeStatus, RunRecord

LOW_UTILISATION = 0.6  # below this share of agent capacity in use, say why
POST_MERGE_MARKERS = ("after merg", "post-merge", "merged tree", "after the merge")
QUOTE_LINES = 3  # of a failure's output in a bullet; the rest is in the node's log
RESUMED, KEPT = "resumed ", "kept branch "  # notes of git/worktrees.start_task, run/node.wind_down
LOST = "its node run "  # a note of flows/node_pool: a node run that crashed, started again

# Why an attempt did not complete, in words, and what to do when a node needed retries for it.
CAUSES: dict[Cause, tuple[str, str]] = {
    Cause.CONFLICT: (
        "conflict race: the base moved while it merged",
        "sequence it after the tasks that change the same files (depends_on), or raise "
        "conflict_rounds",
    ),
    Cause.VALIDATION: (
        "validation",
        "read the failing check in its log; fix the test if it is flaky, else say in the task "
        "what the validation commands check",
    ),
    Cause.AGENT: ("agent failure", "read the end of its log for why the agent session failed"),
    Cause.NO_CHANGE: (
        "no change: the agent committed nothing",
        "check the work is not already on the base, or say in the task what must change",
    ),
    Cause.GIT: ("git", "check that the origin is reachable and accepts pushes"),
    Cause.SETUP: ("setup", "fix the task's agent settings, prompt template or conventions file"),
    Cause.BUDGET: (
        "budget spent",
        "raise the budget (budget_tokens/budget_usd: the task's frontmatter, budget_rules or "
        "the run's) or split the task",
    ),
    Cause.USAGE_LIMIT: (
        "usage limit",
        "run again after the provider's reset, or raise usage_limit_max_wait_s",
    ),
}


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


def _quote(text: str) -> str:
    """At most ``QUOTE_LINES`` lines of a failure, the first inline and the rest indented so
    they stay in the bullet: the whole output is in the node's log, not in the review."""
    lines = [line.strip() for line in text.splitlines() if line.strip()][:QUOTE_LINES]
    return "\n  ".join(lines)


def _log(node: NodeRecord) -> str:
    return f" (log: {node.log_path})" if node.log_path else ""


def _stale(node: NodeRecord, attempt: Attempt) -> str | None:
    """The note of a first attempt that resumed a branch kept by an earlier run, if it did:
    a later attempt resuming the branch this run kept is the retry working as meant."""
    if (
        not node.attempts
        or attempt is not node.attempts[0]
        or attempt.status is NodeStatus.COMPLETED
    ):
        return None
    return next((n for n in attempt.notes if n.startswith(RESUMED)), None)


def _why(node: NodeRecord, attempt: Attempt) -> str:
    """Why the attempt did not complete, from its recorded cause and notes (not guessed from
    its outcome), then the first line of its reason."""
    parts = [
        CAUSES[attempt.cause][0] if attempt.cause else "",
        "stale branch" if _stale(node, attempt) else "",
        _first_line(attempt.reason),
    ]
    said = "; ".join(p for p in parts if p)
    return f" ({said})" if said else ""


@dataclass(frozen=True)
class Section:
    """One heading of the template; action items are checkboxes, to be ticked off by a person."""

    title: str
    empty: str  # the one line a section with nothing to say gets
    bullet: str = "- "


RIGHT = Section("What Went Right", "Nothing completed in this run.")
WRONG = Section("What Went Wrong", "Nothing: no failures, retries, conflicts or stalls.")
BETTER = Section("What Could Be Better", "Nothing measured stands out.")
ACTIONS = Section(
    "Action Items", "None: nothing failed, conflicted, stalled or was left behind.", "- [ ] "
)
SECTIONS = (RIGHT, WRONG, BETTER, ACTIONS)


class Line(NamedTuple):
    section: Section
    text: str


Rule = Callable[[RunRecord], list[Line]]


def _with_status(run: RunRecord, status: NodeStatus) -> list[NodeRecord]:
    return [n for n in run.nodes if n.status is status]


def _worked(run: RunRecord) -> list[NodeRecord]:
    return [n for n in run.nodes if ran(n)]


def _merged(run: RunRecord) -> list[NodeRecord]:
    return [n for n in _with_status(run, NodeStatus.COMPLETED) if not n.already_done]


def _agent_total(run: RunRecord) -> float:
    return sum(n.agent_seconds for n in run.nodes)


def merged_nodes(run: RunRecord) -> list[Line]:
    merged = _merged(run)
    if not merged:
        return []
    ids = ", ".join(n.task_id for n in merged)
    return [
        Line(RIGHT, f"{len(merged)} node(s) completed, validated and merged in this run: {ids}.")
    ]


def already_done(run: RunRecord) -> list[Line]:
    already = [n for n in _with_status(run, NodeStatus.COMPLETED) if n.already_done]
    if not already:
        return []
    ids = ", ".join(n.task_id for n in already)
    return [
        Line(
            RIGHT,
            f"{len(already)} node(s) were already completed on {run.base} and were not re-run: "
            f"{ids}.",
        )
    ]


def first_try(run: RunRecord) -> list[Line]:
    merged = _merged(run)
    first = [n for n in merged if len(n.attempts) <= 1 and not n.conflicts]
    if not first:
        return []
    return [
        Line(
            RIGHT,
            f"{len(first)} of {len(merged)} merged node(s) passed on the first attempt "
            "without a merge conflict.",
        )
    ]


def parallelism(run: RunRecord) -> list[Line]:
    """How much of the allowed parallelism the run used, and whether the graph was too narrow."""
    worked = _worked(run)
    if not worked:
        return []
    makespan = _makespan(run)
    agent_total = _agent_total(run)
    busy_total = sum(n.duration_s for n in worked)
    peak = run.max_concurrent or peak_concurrency(run.nodes)
    lines = [
        Line(
            RIGHT,
            f"Parallelism: up to {peak} node(s) ran at once (limit {run.max_parallel} agent "
            "sessions; a node waiting to merge gives its slot up); "
            f"{_s(agent_total)} of agent time in a makespan of {_s(makespan)} "
            f"(average {agent_total / makespan:.2f} agent sessions busy).",
        )
    ]
    utilisation = busy_total / (makespan * run.max_parallel)
    if utilisation < LOW_UTILISATION:
        lines.append(
            Line(
                BETTER,
                f"Only {utilisation:.0%} of the {run.max_parallel} slots' time was used "
                f"({_s(busy_total)} of node time over {_s(makespan)}): the graph is narrower "
                "than the limit for much of the run.",
            )
        )
    return lines


def merge_queue(run: RunRecord) -> list[Line]:
    """What the merge queue saved: branches validated together, validations not rerun, and
    validations run beside the one before instead of after it."""
    merged = _merged(run)
    batches = {tuple(sorted([n.task_id, *n.merged_with])) for n in merged if n.merged_with}
    skipped = [n.task_id for n in merged if n.validation_skipped]
    ahead = [n.task_id for n in merged if n.validated_ahead]
    lines = []
    if batches:
        together = sum(len(b) for b in batches)
        lines.append(
            Line(
                RIGHT,
                f"Merge queue: {together} branch(es) landed in {len(batches)} batch(es), each "
                f"batch validated together (largest {max(len(b) for b in batches)}).",
            )
        )
    if skipped:
        lines.append(
            Line(
                RIGHT,
                f"Post-merge validation skipped for {_and(skipped)}: the merged tree was the "
                f"one validated on the branch ({run.base} had not moved since).",
            )
        )
    if ahead:
        lines.append(
            Line(
                RIGHT,
                f"Validated ahead: {_and(ahead)}, at the same time as the batch before, on the "
                "head it left; landed as the commits validated, without a validation of their own "
                "after it.",
            )
        )
    return lines


def machines(run: RunRecord) -> list[Line]:
    """Where the nodes of a node-pool run worked, and which lost their machine mid-run."""
    on: Counter[str] = Counter(n.ran_on for n in run.nodes if n.ran_on)
    if not on:
        return []
    spread = ", ".join(f"{where} ({count})" for where, count in sorted(on.items()))
    lines = [Line(RIGHT, f"Nodes ran on {len(on)} machine(s): {spread}.")]
    for node in run.nodes:
        lost = [note for note in node.notes if note.startswith(LOST)]
        if lost:
            lines.append(
                Line(
                    WRONG,
                    f"{node.task_id} lost its machine {len(lost)} time(s) and started again "
                    f"elsewhere from its checkpoint: {_first_line(lost[-1])}",
                )
            )
    return lines


def waiting(run: RunRecord) -> list[Line]:
    """The makespan against the longest chain as run: far longer means nodes waited."""
    chain_ids, chain_time = _longest_chain(run, {n.task_id: n.duration_s for n in _worked(run)})
    if not chain_ids:
        return []
    makespan = _makespan(run)
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
        return [
            Line(
                BETTER,
                line + f" The run took {_s(makespan - chain_time)} longer than that chain: "
                "nodes waited for a free slot or for the merge queue.",
            )
        ]
    return [Line(RIGHT, line)]


def failures(run: RunRecord) -> list[Line]:
    """Failed nodes; one that broke the base branch once merged needs a different fix."""
    lines = []
    for n in _with_status(run, NodeStatus.FAILED):
        tries = f" after {len(n.attempts)} attempt(s)" if n.attempts else ""
        post = _is_post_merge(n)
        lines.append(
            Line(
                WRONG,
                f"{n.task_id} failed{tries}"
                + (" (validation failed after merging into the base branch)" if post else "")
                + f": {_quote(n.reason) or 'no reason recorded'}{_log(n)}",
            )
        )
        if post:
            action = (
                f"{n.task_id} passed on its branch but broke {run.base} once merged "
                "(the base branch was reset, nothing broken was pushed): it interacts with "
                "work merged before it; add that dependency to its depends_on, or add a "
                "test the branch validation catches."
            )
        else:
            action = (
                f"Fix what made {n.task_id} fail ({_first_line(n.reason) or 'see its log'}), "
                "then run again: only the unfinished nodes run."
            )
        lines.append(Line(ACTIONS, action))
    return lines


def blocked(run: RunRecord) -> list[Line]:
    lines = []
    for n in _with_status(run, NodeStatus.BLOCKED):
        lines.append(Line(WRONG, f"{n.task_id} blocked: {_quote(n.reason) or 'no reason given'}"))
        lines.append(
            Line(
                ACTIONS,
                f"Answer {n.task_id}'s question in its Notes, then set its status to pending.",
            )
        )
    return lines


def stalls(run: RunRecord) -> list[Line]:
    """Stalled nodes, and one action for every node that stalled, even on an earlier attempt."""
    stalled_now = _with_status(run, NodeStatus.STALLED)
    lines = [
        Line(
            WRONG,
            f"{n.task_id} stalled (no output within the idle timeout): {_quote(n.reason)}{_log(n)}",
        )
        for n in stalled_now
    ]
    ids = {n.task_id for n in run.nodes if any(a.status is NodeStatus.STALLED for a in n.attempts)}
    ids |= {n.task_id for n in stalled_now}
    if ids:
        lines.append(
            Line(
                ACTIONS,
                f"Stalls in {', '.join(sorted(ids))}: read the end of their logs for where "
                "the agent hung; if it was working silently, raise idle_timeout_s.",
            )
        )
    return lines


def timeouts(run: RunRecord) -> list[Line]:
    lines = []
    for n in _with_status(run, NodeStatus.TIMED_OUT):
        lines.append(Line(WRONG, f"{n.task_id} timed out: {_quote(n.reason)}{_log(n)}"))
        lines.append(
            Line(
                ACTIONS,
                f"{n.task_id} ran out of time: split it into smaller tasks or raise "
                "agent_timeout_s.",
            )
        )
    return lines


def cancelled(run: RunRecord) -> list[Line]:
    return [
        Line(WRONG, f"{n.task_id} was cancelled: {_quote(n.reason)}")
        for n in _with_status(run, NodeStatus.CANCELLED)
    ]


def skipped(run: RunRecord) -> list[Line]:
    """One line per reason, so a failure upstream of many nodes is said once."""
    reasons: dict[str, list[str]] = defaultdict(list)
    for n in _with_status(run, NodeStatus.SKIPPED):
        reasons[n.reason].append(n.task_id)
    return [Line(WRONG, f"Skipped {', '.join(ids)}: {reason}") for reason, ids in reasons.items()]


def retries(run: RunRecord) -> list[Line]:
    """Nodes that needed more than one attempt, each attempt with why it did not complete;
    a node that completed late gets one action per cause, the cure differs by cause."""
    lines = []
    for n in run.nodes:
        if len(n.attempts) <= 1:
            continue
        history = "; ".join(
            f"attempt {a.number} {a.status.value}"
            + (_why(n, a) if a.status is not NodeStatus.COMPLETED else "")
            for a in n.attempts
        )
        done = n.status is NodeStatus.COMPLETED
        outcome = "and then completed" if done else f"and still {n.status.value}"
        lines.append(
            Line(
                WRONG,
                f"{n.task_id} needed {len(n.attempts)} attempts {outcome}: {history}{_log(n)}",
            )
        )
        if not done:
            continue  # the failures rule says what to fix
        by_cause: dict[Cause, list[str]] = defaultdict(list)
        for a in n.attempts:
            if a.cause is not None:
                by_cause[a.cause].append(str(a.number))
        for cause, numbers in by_cause.items():
            lines.append(
                Line(
                    ACTIONS,
                    f"{n.task_id} attempt(s) {', '.join(numbers)} did not complete "
                    f"({CAUSES[cause][0]}): {CAUSES[cause][1]}.",
                )
            )
    return lines


def stale_branches(run: RunRecord) -> list[Line]:
    """A first attempt that resumed a branch an earlier run kept, and failed on it."""
    lines = []
    for n in run.nodes:
        note = next((s for a in n.attempts if (s := _stale(n, a))), None)
        if note is None:
            continue
        lines.append(
            Line(
                WRONG,
                f"{n.task_id} started on a stale branch kept by an earlier run ({note}) and "
                "did not complete on it.",
            )
        )
        lines.append(
            Line(
                ACTIONS,
                f"If the kept work of {n.task_id} no longer fits {run.base}, start it afresh "
                "with the reset setting (its branch is moved aside to a backup ref).",
            )
        )
    return lines


def conflicts(run: RunRecord) -> list[Line]:
    """Merge conflicts, and per file who met there: nodes running together, or merged work."""
    lines = []
    changed_by = _changed_by(run)
    by_id = {n.task_id: n for n in run.nodes}
    met: dict[str, set[str]] = defaultdict(set)  # file -> nodes that met there in parallel
    for n in run.nodes:
        for c in n.conflicts:
            state = "resolved by the agent" if c.resolved else "NOT resolved"
            lines.append(
                Line(
                    WRONG,
                    f"{n.task_id} hit a merge conflict (round {c.round}) in "
                    f"{', '.join(c.files)}, {state}.",
                )
            )
            for f in c.files:
                met[f].add(n.task_id)
                met[f].update(o for o in changed_by.get(f, []) if _overlap(n, by_id[o]))
    for f, ids in sorted(met.items()):
        if len(ids) > 1:
            action = (
                f"{_and(sorted(ids))} changed {f} at the same time: sequence them (depends_on) "
                f"or split {f} so parallel tasks stop meeting there."
            )
        else:
            action = (
                f"{next(iter(ids))} conflicted in {f} with work merged while it ran: sequence "
                f"the tasks that change {f}, or split it."
            )
        lines.append(Line(ACTIONS, action))
    return lines


def _kept(node: NodeRecord) -> list[str]:
    """Branches the node's last attempt kept on purpose (they hold work not on base)."""
    notes = node.attempts[-1].notes if node.attempts else node.notes
    return [n.removeprefix(KEPT) for n in notes if n.startswith(KEPT)]


def cleanup(run: RunRecord) -> list[Line]:
    """What cleanup left behind (worktrees, branches it could not remove, branches kept with
    unfinished work), or that it left nothing."""
    failed = [
        f"{n.task_id}: {what}"
        for n in run.nodes
        for what, removed in n.cleanup.items()
        if not removed
    ]
    kept = [
        f"{n.task_id}: branch {branch} ({why})"
        for n in run.nodes
        for branch, _, why in (k.partition(": ") for k in _kept(n))
    ]
    lines = []
    if failed or kept:
        lines.append(Line(WRONG, f"Cleanup left behind: {'; '.join(failed + kept)}."))
    if failed:
        listed = "; ".join(failed)
        lines.append(
            Line(
                ACTIONS,
                "Remove what cleanup left (git worktree prune; git branch -D / git push origin "
                f"--delete tgflow/<task>) and check why: {listed}.",
            )
        )
    if kept:
        lines.append(
            Line(
                ACTIONS,
                f"Kept branches hold unfinished work the next run resumes ({'; '.join(kept)}); "
                "to start a task afresh instead, use the reset setting.",
            )
        )
    if lines:
        return lines
    cleaned = [n for n in run.nodes if n.cleanup and all(n.cleanup.values())]
    if not cleaned:
        return []
    return [
        Line(
            RIGHT,
            f"Cleanup: worktrees and task branches (local and remote) removed for "
            f"{len(cleaned)} node(s), nothing left behind.",
        )
    ]


def slow_validation(run: RunRecord) -> list[Line]:
    validate_total = sum(n.validate_seconds for n in run.nodes)
    agent_total = _agent_total(run)
    if not (_worked(run) and validate_total > agent_total > 0):
        return []
    return [
        Line(
            BETTER,
            f"Validation took {_s(validate_total)}, more than the agents' {_s(agent_total)}: "
            "a faster test command would shorten every node and the merge queue.",
        )
    ]


def slowest(run: RunRecord) -> list[Line]:
    worked = _worked(run)
    if not worked:
        return []
    n = max(worked, key=lambda n: n.duration_s)
    return [
        Line(
            BETTER,
            f"Slowest node: {n.task_id}, {_s(n.duration_s)} "
            f"({_s(n.agent_seconds)} agent, {_s(n.validate_seconds)} validation).",
        )
    ]


def tokens(run: RunRecord) -> list[Line]:
    counted = [n for n in run.nodes if n.tokens_in is not None or n.tokens_out is not None]
    if not counted:
        return (
            [Line(BETTER, "Tokens and cost: not reported by this agent.")] if _worked(run) else []
        )
    costs = [n.cost_usd for n in run.nodes if n.cost_usd is not None]
    t_in = sum(n.tokens_in or 0 for n in counted)
    t_out = sum(n.tokens_out or 0 for n in counted)
    line = f"Tokens: {t_in} in, {t_out} out over {len(counted)} node(s)"
    line += f"; cost ${sum(costs):.4f}." if costs else "; cost not reported by the agent."
    return [Line(BETTER, line)]


def budgets(run: RunRecord) -> list[Line]:
    """What was spent against each budget set, and which budget stopped which node."""
    lines = []
    if run.budget:
        spent = run_overspent(run.budget, run.spend)
        if spent is None:
            lines.append(Line(RIGHT, f"Within the run's budget: {run.spend} of {run.budget}."))
        else:
            stopped = [n.task_id for n in run.nodes if n.reason.startswith(RUN_SPENT)]
            lines.append(
                Line(
                    WRONG,
                    f"The run's budget was spent: {run.spend} of {run.budget}"
                    + (f"; stopped or not started: {_and(stopped)}" if stopped else "")
                    + ".",
                )
            )
            lines.append(
                Line(
                    ACTIONS,
                    "Raise the run's budget (budget_tokens/budget_usd) or give its tasks "
                    "smaller ones, then run again: only the unfinished nodes run.",
                )
            )
    for n in run.nodes:
        if not n.budget:
            continue
        hit = n.cause is Cause.BUDGET and not n.reason.startswith(RUN_SPENT)
        lines.append(
            Line(
                WRONG if hit else RIGHT,
                f"{n.task_id} spent {n.spend} of its budget of {n.budget}"
                + ("; the budget stopped it and it was not retried." if hit else "."),
            )
        )
    return lines


def usage_limits(run: RunRecord) -> list[Line]:
    """Which nodes waited for a provider's usage limit, how long and for whom: time the run
    lost to it, not failures."""
    waited = [n for n in run.nodes if n.usage_waits]
    if not waited:
        return []
    parts = []
    for n in waited:
        providers = sorted({w.provider for w in n.usage_waits})
        said = all(w.said for w in n.usage_waits)
        parts.append(
            f"{n.task_id} {_s(sum(w.seconds for w in n.usage_waits))} for {_and(providers)}"
            + (" (resets said by the provider)" if said else " (in part tgflow's backoff)")
        )
    return [
        Line(
            BETTER,
            f"{len(waited)} node(s) paused for a provider's usage limit and went on after the "
            f"reset: {'; '.join(parts)}.",
        ),
        Line(
            ACTIONS,
            "Usage limits cost the run time: lower max_parallel, or give some tasks an agent "
            "on another provider (agent_rules).",
        ),
    ]


def tool_errors(run: RunRecord) -> list[Line]:
    total = sum(n.tool_errors for n in run.nodes)
    if not total:
        return []
    noisy = ", ".join(f"{n.task_id} ({n.tool_errors})" for n in run.nodes if n.tool_errors)
    return [Line(BETTER, f"{total} tool error(s) reported by agents: {noisy}.")]


RULES: tuple[Rule, ...] = (
    merged_nodes,
    already_done,
    first_try,
    parallelism,
    merge_queue,
    machines,
    waiting,
    failures,
    blocked,
    stalls,
    timeouts,
    cancelled,
    skipped,
    retries,
    stale_branches,
    conflicts,
    cleanup,
    slow_validation,
    slowest,
    tokens,
    budgets,
    usage_limits,
    tool_errors,
)


def _header(run: RunRecord) -> list[str]:
    counts = Counter(n.status for n in run.nodes)
    logs = sorted({str(Path(n.log_path).parent) for n in run.nodes if n.log_path})
    where = ["", f"Node logs: {', '.join(f'{d}/' for d in logs)}"] if logs else []
    return [
        f"# AAR: {run.run_name}",
        "",
        f"Origin `{run.origin}`, base `{run.base}`; {run.started_at:%Y-%m-%d %H:%M:%S} → "
        f"{run.finished_at:%H:%M:%S} UTC ({_s(_makespan(run))}). {len(run.nodes)} node(s): "
        + ", ".join(f"{counts[s]} {s.value}" for s in sorted(counts))
        + ".",
        *where,
    ]


def write_aar(run: RunRecord) -> str:
    """The review as markdown."""
    found = [line for rule in RULES for line in rule(run)]
    out = _header(run)
    for section in SECTIONS:
        texts = [f"{section.bullet}{x.text}" for x in found if x.section is section]
        out += ["", f"## {section.title}", "", *(texts or [section.empty])]
    return "\n".join(out) + "\n"
