"""Develop: the agent works on the task's branch in its own worktree, then tgflow checks.

Parallel work: nothing here holds the merge lock except the short ref moves (worktree add,
backup push). The orchestrator, not the agent, decides what counts: the branch must hold
new commits, task files stay as they are on base, and validation passes on the branch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tasks_lib.agents.base import Outcome, SessionRequest, SessionResult
from tasks_lib.git import worktrees
from tasks_lib.git.runner import GitError
from tasks_lib.git.workspace import AGENT_EMAIL, TASK_TRAILER, parse_identity
from tasks_lib.graph.taskfile import Task
from tasks_lib.run.budget import Spend
from tasks_lib.run.checkpoints import checkpointing
from tasks_lib.run.config import CONFIG_FILE
from tasks_lib.run.isolation import sandbox_for
from tasks_lib.run.node_state import Node, NodeFailed, PromptContext
from tasks_lib.run.prompt import (
    BLOCKED_FILE,
    KeptWork,
    PromptTemplateError,
    build_prompt,
    last_failure_note,
)
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus, UsageWait
from tasks_lib.run.validation import run_validation

CONVENTION_FILES = ("AGENTS.md", "CONVENTIONS.md")
LIMITED_BEFORE = (
    "Your session before this one was ended by the provider's usage limit. The checkout "
    "holds what it did (its files and commits): go on from there."
)

_OUTCOME_STATUS = {
    Outcome.FAILED: NodeStatus.FAILED,
    Outcome.TIMED_OUT: NodeStatus.TIMED_OUT,
    Outcome.STALLED: NodeStatus.STALLED,
    Outcome.CANCELLED: NodeStatus.CANCELLED,
    Outcome.BLOCKED: NodeStatus.BLOCKED,
}


def develop(node: Node, needs_agent: bool) -> None:
    """Agent session (unless the branch only needs merging again), then the checks."""
    ws, wt, rec = node.ws, node.wt(), node.record
    if needs_agent:
        (wt / BLOCKED_FILE).unlink(missing_ok=True)
        session(node, prompt(node))
    else:
        rec.notes.append(
            "the last attempt lost a merge race: its branch is merged again without a new session"
        )
    leftovers = trailed(node, f"tgflow: commit uncommitted work of {node.task.id}")
    if worktrees.commit_all(ws, wt, leftovers, agent_author(node)):
        rec.notes.append("committed work the agent left uncommitted")
    # Read once for the checks below: only other nodes' merges move them, and reading them
    # again between two checks would only be another moment of those merges.
    base_sha, settled = ws.base_and_settled()
    revert_protected_paths(node, base_sha)
    # A branch that changes files holds commits not on base; only one that changes none is
    # asked for its commits.
    changed = ws.files_changed(node.branch_ref, base_sha)
    if not changed and not ws.commits_ahead(node.branch_ref):
        raise NodeFailed(
            NodeStatus.FAILED, "the agent finished without making any change", Cause.NO_CHANGE
        )
    if _merge_settled_base(node, settled):
        changed = ws.files_changed(node.branch_ref)
    node.on_changed(changed)
    if not node.defer_backup:
        backup_branch(node)
    refuse_conflict_markers(node, changed)
    validate(node, wt, "on the task branch")


def _merge_settled_base(node: Node, settled: str) -> bool:
    """Base (``settled``) merged into the branch before it is validated, so the tree validated
    is the one the merge will make (unless base moves meanwhile): the post-merge validation can
    then be skipped, and a clash with what landed since shows on the branch. A conflict here is
    left to the merge (which hands it to the agent), so this never costs a session. True when
    the branch moved."""
    ws, wt = node.ws, node.wt()
    if ws.is_ancestor(settled, node.branch_ref):
        return False
    if merge_base_into_branch(node, wt, settled):
        node.record.notes.append(
            f"merged {ws.base} ({settled[:10]}) into the branch before validating it"
        )
        return True
    ws.git(wt, "merge", "--abort")
    node.record.notes.append(
        f"{ws.base} ({settled[:10]}) conflicts with the branch; left to the merge"
    )
    return False


def merge_base_into_branch(node: Node, wt: Path, base_sha: str, why: str = "") -> bool:
    """Merge ``base_sha`` into the checkout's branch and collect it; False (the merge left
    open) when it conflicts."""
    message = trailed(node, f"Merge {node.ws.base} into {node.branch}{why}")
    try:
        node.ws.git(wt, "merge", "--no-edit", "-m", message, base_sha)
    except GitError:
        if not node.ws.in_merge(wt):
            raise
        return False
    worktrees.collect(node.ws, wt)
    return True


def prompt_context(
    node: Node, on_main: Task, summaries: dict[str, str] | None, resumed: bool
) -> PromptContext:
    """Dependency summaries, conventions and the template, as they are on base; for a
    ``resumed`` branch, what it holds and why the run that left it did not finish (the last
    failure tgflow noted in the task file on base, else the reason of its WIP commit)."""
    ws, s = node.ws, node.settings
    if summaries is None:
        summaries = {}
        for dep in on_main.depends_on:
            found = node.on_base(dep)
            summaries[dep] = (found.section("Summary") or "") if found else ""
    conventions = conventions_file = None
    names = [s.conventions] if s.conventions else list(CONVENTION_FILES)
    settled = node.start_base or ws.settled()  # from git: a merge being validated must not show
    for name in names:
        conventions = ws.show(settled, name)
        if conventions is not None:
            conventions_file = name
            break
    else:
        if s.conventions:
            raise NodeFailed(
                NodeStatus.FAILED,
                f"conventions file {s.conventions!r} not found on {ws.base}; "
                "fix the setting or add the file",
                Cause.SETUP,
            )
    template = None
    if s.prompt_template:
        path = Path(s.prompt_template).expanduser()
        path = path if path.is_absolute() else ws.integration / path
        if not path.is_file():
            raise NodeFailed(
                NodeStatus.FAILED,
                f"prompt template {s.prompt_template!r} not found (looked at {path})",
                Cause.SETUP,
            )
        template = path.read_text(encoding="utf-8")
    kept = None
    if resumed:
        commits = ws.git(
            ws.integration, "log", "--reverse", "--format=%h %s", node.branch_ref,
            f"^{ws.base_ref()}",
        ).splitlines()  # fmt: skip
        subjects = [c.partition(" ")[2] for c in commits]
        wip = [c for c in subjects if c.startswith(worktrees.WIP_PREFIX)]
        noted = last_failure_note(on_main.section("Notes"))
        kept = KeptWork(commits, noted or (wip[-1] if wip else None))
    return PromptContext(
        task_rel=on_main.path.relative_to(ws.integration).as_posix(),
        summaries=summaries,
        conventions=conventions,
        conventions_file=conventions_file,
        template=template,
        kept=kept,
    )


def prompt(node: Node, conflict_files: list[str] | None = None) -> str:
    ctx = node.context
    if ctx is None:
        raise RuntimeError(f"{node.task.id}: the prompt context was never read")
    try:
        return build_prompt(
            node.task,
            task_file_rel=ctx.task_rel,
            dependency_summaries=ctx.summaries,
            conventions=ctx.conventions,
            conventions_file=ctx.conventions_file,
            validate_commands=node.settings.validate_commands,
            protected=[f"{node.settings.tasks_dir}/", CONFIG_FILE, *node.settings.protected_paths],
            attempt=node.attempt,
            kept=ctx.kept,
            previous_failure=node.previous_failure,
            conflict_files=conflict_files,
            template=ctx.template,
        )
    except PromptTemplateError as e:
        raise NodeFailed(
            NodeStatus.FAILED, f"{node.settings.prompt_template}: {e}", Cause.SETUP
        ) from None


def session(node: Node, text: str) -> SessionResult:
    """One agent session; anything but success (or Safe Exit) ends the node, and so does a
    spent budget: none starts then, and one running is cut (``Node.spending``). A session the
    provider's usage limit ended is no failure: the node waits out the limit (``run/usage``)
    and a new session goes on with the work in the same checkout."""
    wt = node.wt()
    provider = node.agent.provider or node.agent.name
    while True:
        wait_for_usage(node, provider)
        result = _session(node, text)
        if not limit_met(node, provider, result):
            break
        if LIMITED_BEFORE not in text:
            text = f"{text.rstrip()}\n\n{LIMITED_BEFORE}"
    blocked = wt / BLOCKED_FILE
    if blocked.is_file() and result.outcome in (
        Outcome.SUCCEEDED, Outcome.FAILED, Outcome.BLOCKED,
    ):  # fmt: skip
        reason = blocked.read_text(encoding="utf-8", errors="replace").strip()
        raise NodeFailed(NodeStatus.BLOCKED, reason or "the agent gave no reason")
    if result.outcome == Outcome.BLOCKED:
        raise NodeFailed(NodeStatus.BLOCKED, result.reason or "the agent gave no reason")
    if result.outcome != Outcome.SUCCEEDED:
        cut = node.cut_for()  # the session was cut for it, or ended over it: no retry either
        if cut:
            raise NodeFailed(NodeStatus.FAILED, cut, Cause.BUDGET)
        raise NodeFailed(
            _OUTCOME_STATUS[result.outcome],
            f"agent {result.outcome.value}: {result.reason or result.tail}",
            Cause.AGENT,
        )
    return result


def limit_met(node: Node, provider: str, result: SessionResult) -> bool:
    """Whether ``provider``'s usage limit ended the session: then the run's gate pauses the
    provider (the wait before the next session says until when) and the record says so;
    else a session went through, and the next limit backs off from the start."""
    if result.limit is None:
        node.usage.passed(provider)
        return False
    node.usage.hit(result.limit)
    node.record.notes.append(f"a session met the usage limit of {provider}: {result.limit.message}")
    return True


def wait_for_usage(node: Node, provider: str) -> None:
    """Wait out ``provider``'s pause, if it has one (another node's limit counts too), on the
    node's cancel event; a node that would wait past ``usage_limit_max_wait_s`` in all fails
    now, its branch kept. ``on_wait`` hears the reason when the node begins to wait, and None
    once it goes on."""
    rec, most = node.record, node.settings.usage_limit_max_wait_s
    paused = False
    while (pause := node.usage.pause(provider)) is not None:
        waited = sum(w.seconds for w in rec.usage_waits)
        if waited + pause.remaining_s() > most:
            raise NodeFailed(
                NodeStatus.FAILED,
                f"usage limit of {provider} until {pause.until:%Y-%m-%d %H:%M:%S} UTC: past "
                f"usage_limit_max_wait_s ({most:g} s) for this node; run again after that or "
                "raise usage_limit_max_wait_s (the branch is kept)",
                Cause.USAGE_LIMIT,
            )
        node.warn(str(pause))
        node.on_wait(str(pause))
        paused = True
        began = datetime.now(UTC)
        node.cancel.wait(pause.remaining_s())
        seconds = (datetime.now(UTC) - began).total_seconds()
        rec.usage_waits.append(
            UsageWait(provider=provider, seconds=seconds, until=pause.until, said=pause.said)
        )
        rec.notes.append(
            f"waited {seconds:.0f} s for the usage limit of {provider} (until "
            f"{pause.until:%H:%M:%S} UTC, {'said by the provider' if pause.said else 'backoff'})"
        )
        if node.cancel.is_set():
            raise NodeFailed(
                NodeStatus.CANCELLED, f"cancelled while waiting for the usage limit of {provider}"
            )
    if paused:
        node.on_wait(None)


def _session(node: Node, text: str) -> SessionResult:
    """Run one session and count what it did and spent (a spent budget starts none)."""
    rec, wt = node.record, node.wt()
    refused = node.no_more_sessions()
    if refused:
        raise NodeFailed(NodeStatus.FAILED, refused, Cause.BUDGET)
    # Where the checkout stands: its task branch, collected after every change made there
    # (read through the clone's reader; a branch not collected yet is asked of the checkout).
    author, before = agent_author(node), node.ws.commit_of(node.branch_ref) or node.ws.head(wt)
    with checkpointing(node):  # the work reaches the origin while the agent works
        result = node.agent.run(
            SessionRequest(
                task_id=node.task.id,
                worktree=wt,
                prompt=text,
                timeout_s=node.settings.agent_timeout_s,
                idle_timeout_s=node.settings.idle_timeout_s,
                on_line=node.on_line,
                cancel=node.cancel,
                model=node.task.model,
                env=node.ws.identity_env(author),
                sandbox=sandbox_for(node.ws, node.settings.sandbox, wt),
                over_budget=node.spending,
                inbox=node.inbox,
            )
        )
    node.ledger.settle(node.task.id, Spend.of(result.tokens_in, result.tokens_out, result.cost_usd))
    rec.notes += worktrees.reclaim(wt)
    node.ws.add_task_trailer(wt, before, node.task.id)
    collected = worktrees.collect(node.ws, wt)
    rec.notes += collected.notes
    if collected.rescued:  # they reach the origin with the branch's own push, not with base
        node.defer_backup = False
    count_session(rec, result)
    return result


def count_session(rec: NodeRecord, result: SessionResult) -> None:
    """Add what a session did and spent to the record (a measure no session reported stays
    None: not measured is not 0)."""
    rec.sessions += 1
    rec.agent_seconds += result.duration_s
    rec.tool_errors += result.tool_errors
    if result.tokens_in is not None:
        rec.tokens_in = (rec.tokens_in or 0) + result.tokens_in
    if result.tokens_out is not None:
        rec.tokens_out = (rec.tokens_out or 0) + result.tokens_out
    if result.cost_usd is not None:
        rec.cost_usd = (rec.cost_usd or 0.0) + result.cost_usd


def revert_protected_paths(node: Node, base_sha: str | None = None) -> None:
    """Only tgflow updates task files, and an agent must not weaken the checks of every later
    run (the repository's .tgflow.toml, its CI): the branch's edits there are undone, in one
    commit, before anything is validated. ``base_sha``: base's commit, when already read."""
    s = node.settings
    reverted = worktrees.revert_paths(
        node.ws,
        node.wt(),
        [s.tasks_dir, CONFIG_FILE, *s.protected_paths],
        trailed(node, f"tgflow: revert the agent's edits to protected paths for {node.task.id}"),
        base_sha,
        head_ref=node.branch_ref,  # collected: the checkout's HEAD
    )
    if reverted:
        node.record.notes.append(
            "reverted the agent's edits to protected paths (the tasks folder, .tgflow.toml and "
            "protected_paths; only people change them): " + ", ".join(reverted)
        )


def refuse_conflict_markers(node: Node, changed: list[str] | None = None) -> None:
    """Conflict markers in a file no test reads would pass validation and land on base: the
    files the branch changed since it left base (``changed``, when the caller has them) must
    hold none (the branch is backed up first, so the work is kept for a retry)."""
    wt = node.wt()
    if changed is None:
        changed = node.ws.files_changed(node.branch_ref)
    marked = [f for f in changed if (wt / f).is_file() and has_markers(read_text(wt / f))]
    if marked:
        raise NodeFailed(
            NodeStatus.FAILED,
            f"conflict markers in {', '.join(marked)}: resolve them and commit",
            Cause.AGENT,
        )


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def has_markers(text: str) -> bool:
    lines = text.splitlines()
    return any(x.startswith("<<<<<<< ") for x in lines) and any(
        x.startswith(">>>>>>> ") for x in lines
    )


def agent_author(node: Node) -> tuple[str, str]:
    """Who wrote the agent's commits (tgflow commits them): ``agent_identity``, else the preset
    and the model it ran with, so history tells an agent's work, and which model did it, from a
    person's."""
    configured = node.settings.agent_identity
    if configured is not None:
        parsed = parse_identity(configured)
        if parsed is None:
            raise NodeFailed(
                NodeStatus.FAILED,
                f'agent_identity {configured!r} is not "Name <email>"; fix it in .tgflow.toml '
                'or the run\'s parameters, e.g. "my agent <agent@example.com>"',
                Cause.SETUP,
            )
        return parsed
    model = node.task.model or node.agent.model
    return f"{node.agent.name} agent" + (f" (model {model})" if model else ""), AGENT_EMAIL


def trailed(node: Node, subject: str) -> str:
    """A commit message of the task's: every commit made for a task says which (a trailer)."""
    return f"{subject}\n\n{TASK_TRAILER}: {node.task.id}"


def validate(node: Node, cwd: Path, where: str) -> None:
    result = run_validation(
        node.settings.validate_commands,
        cwd,
        node.settings.validate_timeout_s,
        node.on_line,
        node.cancel,
        sandbox_for(node.ws, node.settings.sandbox, cwd),
    )
    node.record.validate_seconds += result.duration_s
    if not result.ok:
        raise NodeFailed(
            NodeStatus.FAILED, f"validation {where} failed: {result.output_tail}", Cause.VALIDATION
        )
    # What passed, for the merge to skip validating it again; with no commands, nothing did.
    if node.settings.validate_commands and not node.ws.git(
        cwd, "status", "--porcelain", "--untracked-files=normal"
    ):
        node.validated_tree = node.ws.git(cwd, "rev-parse", "HEAD^{tree}")


def backup_rides_with_base(node: Node, asks: bool) -> bool:
    """Whether the branch may wait for the push of base to reach the origin: when nothing takes
    time between the agent's end and the merge (no validation to run, no person to ask
    (``asks``), no other process taking turns on the merge lock), the merge follows within
    milliseconds and its push carries the work; a push of the branch alone first would only
    cost time (it and its bookkeeping were four commands, about a sixth of a node's own time
    on 50 files). The branch is still pushed alone, first, whenever the node would otherwise
    wait or not land: for the merge lock (the queue's ``before_wait``), after a conflict, when
    the agent left commits to rescue (``session``), and on every failure or stop
    (``wind_down``, ``run_node``, ``back_up_deferred``)."""
    s = node.settings
    return s.push and not s.validate_commands and not asks and not node.ws.merge_lock.shared


def back_up_deferred(node: Node) -> None:
    """The branch onto the origin now, if ``backup_rides_with_base`` left it for later."""
    if node.defer_backup and not node.backed_up:
        backup_branch(node)


def backup_branch(node: Node) -> bool:
    """The workspace is only a cache: the branch is kept on the origin too. True when it is
    (False in a run without push)."""
    if not node.settings.push:
        return False
    ok, output = worktrees.push_branch(node.ws, node.task.id)  # its own refs: no lock
    node.backed_up = node.backed_up or ok
    if not ok:
        node.record.notes.append(f"could not back the branch up on the origin: {output}")
    return ok
