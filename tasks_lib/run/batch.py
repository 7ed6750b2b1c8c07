"""A batch of branches merged in turn on one head and validated once: on base, by whoever
serves the merge queue (``integrate``), or ahead of base, in a checkout of its own, while
the batch before it validates (``Ahead``; the rule is in ``merge_queue``'s doc).

Both make the same commits the same way: each branch merged (a conflict leaves it out), then
each merged task's status committed with its summary, then the result validated. So the
tree validated is the tree pushed, and a batch validated ahead lands as the very commits it
validated: base moves to them when it still stands where they were made.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tasks_lib.git.base import merge
from tasks_lib.git.links import AHEAD_DIR
from tasks_lib.git.locks import FairLock
from tasks_lib.git.runner import GitError
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.taskfile import Status
from tasks_lib.run.develop import agent_author
from tasks_lib.run.isolation import sandbox_for
from tasks_lib.run.merge_queue import MergeQueue
from tasks_lib.run.node_state import Node
from tasks_lib.run.validation import ValidationResult, run_validation

CHECKOUTS = 2  # the one a served batch may still wait on, and the one ahead of it


@dataclass
class Merged:
    """What merging a batch on ``on`` gave: ``head`` after the merges and the status commits,
    ``tree`` the last merge's (before the statuses; None when nothing merged)."""

    on: str
    head: str
    tree: str | None
    merged: list[Node] = field(default_factory=list)
    conflicted: list[Node] = field(default_factory=list)
    merged_as: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, list[str]] = field(default_factory=dict)


def merge_in(nodes: list[Node], at: str, cwd: Path | None = None) -> Merged:
    """Merge each branch in turn on ``at`` in the integration worktree (or ``cwd``), then
    commit each merged task's status completed, with its summary (which names the merge)."""
    ws, s = nodes[0].ws, nodes[0].settings
    out = Merged(on=at, head=at, tree=None)
    for node in nodes:
        done = merge(
            ws, node.task.id, node.task.name, s.merge_strategy, agent_author(node), out.head, cwd
        )
        if done.merged and done.sha is not None:
            out.merged.append(node)
            out.merged_as[node.task.id] = node.record.merge_commit = done.sha
            out.head, out.tree = done.sha, done.tree
        else:
            out.conflicted.append(node)
            out.conflicts[node.task.id] = done.conflicts
    for node in out.merged:
        node.write_task_file(Status.COMPLETED, summary=summary(node), cwd=cwd)
    if out.merged:
        out.head = ws.head(cwd)
    return out


@dataclass
class Validation:
    """How a merged batch's validation went: ``problem`` None when it passed; ``result`` None
    when it was skipped (``validate_merged``)."""

    result: ValidationResult | None
    problem: str | None
    again: bool = False  # run a second time, alone: the first failed beside a validation ahead


def validate_merged(merged: Merged, cwd: Path, cancel: threading.Event) -> Validation:
    """The merged tree's validation, once for the batch. Skipped when one branch merged and
    its tree is the one its own validation passed (base had not moved since it was merged into
    the branch): the same files, the same commands (the status commit is tgflow's). Nothing is
    recorded here: a validation ahead may go unused (``record_validation``)."""
    first = merged.merged[0]
    ws, s = first.ws, first.settings
    if len(merged.merged) == 1 and first.validated_tree == merged.tree:
        return Validation(None, None)

    def on_line(line: str) -> None:
        for node in merged.merged:
            node.on_line(line)

    result = run_validation(
        s.validate_commands, cwd, s.validate_timeout_s, on_line, cancel,
        sandbox_for(ws, s.sandbox, cwd),
    )  # fmt: skip
    if result.ok:
        return Validation(result, None)
    return Validation(
        result,
        f"validation after merging into {ws.base} failed: {result.output_tail}\n"
        f"({ws.base} reset to {merged.on[:10]}; nothing pushed)",
    )


def record_validation(merged: Merged, validation: Validation) -> None:
    """The validation in the records of the batch it decided (``count_seconds``), or why
    there was none."""
    if not merged.merged:  # every branch conflicted: nothing was validated
        return
    if validation.result is not None:
        count_seconds(merged, validation.result)
        if validation.again:
            verdict = "failed again" if validation.problem else "passed"
            for node in merged.merged:
                node.record.notes.append(
                    "the post-merge validation failed while a batch was validated ahead beside "
                    f"it; run again alone, it {verdict}"
                )
        return
    first = merged.merged[0]
    first.record.validation_skipped = True
    first.record.notes.append(
        "post-merge validation skipped: the merged tree is the one validated on the branch "
        f"({(merged.tree or '')[:10]}; {first.ws.base} had not moved since it was merged into "
        "the branch)"
    )


def count_seconds(merged: Merged, result: ValidationResult) -> None:
    """One run for all: each node carries its share, so totals stay true."""
    for node in merged.merged:
        node.record.validate_seconds += result.duration_s / len(merged.merged)


class Ahead:
    """A batch merged and validated on ``on`` in its own checkout, in a thread of its own:
    reserved from the queue while the batch before it validated (``Pipeline.starter``)."""

    def __init__(self, nodes: list[Node], on: str, number: int) -> None:
        self.nodes, self.on, self.number = nodes, on, number
        self.checkout = nodes[0].ws.root / AHEAD_DIR / str(number)
        self.cancel = threading.Event()
        self.merged: Merged | None = None  # set, or ``error``, when ``ready`` is
        self.error: BaseException | None = None
        self.validation: Validation | None = None  # set when ``done`` is, unless ``error``
        self.counted = False  # its validation's time is in the records (``Pipeline.release``)
        self.ready, self.done = threading.Event(), threading.Event()
        # A daemon: a run that ends with a batch reserved must not wait for its validation.
        self._thread = threading.Thread(target=self._run, name=f"ahead {number}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            _stand_on(self.nodes[0].ws, self.checkout, self.on)
            for node in self.nodes:  # as ``serve`` does, on the base they would land on
                node.record.commits = commit_lines(node, self.on)
                node.record.files_changed = node.ws.files_changed(node.branch_ref, self.on)
            self.merged = merge_in(self.nodes, self.on, self.checkout)
            self.ready.set()
            if self.merged.merged:
                self.validation = validate_merged(self.merged, self.checkout, self.cancel)
        except BaseException as e:  # the served batch then merges on base itself
            self.error = e
        finally:
            self.ready.set()
            self.done.set()

    def stop(self) -> None:
        """Not needed (it stood on a head base is not at): the validation is killed."""
        self.cancel.set()
        self._thread.join()

    def verdict(self, cancel: threading.Event) -> None:
        """Wait for the validation, stopping it when ``cancel`` (the run's) is set."""
        while not self.done.wait(0.2):
            if cancel.is_set():
                self.cancel.set()
        self._thread.join()


class Pipeline:
    """The validation ahead of one merge queue (one per origin, like the queue)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._ahead: Ahead | None = None  # of the batch the queue reserved
        self._busy: set[int] = set()  # checkouts in use, by number

    def take(self, batch: list[Node]) -> Ahead | None:
        """The validation ahead of exactly this batch, now the served batch's to use and
        ``release``. The queue serves what it reserved next; when another batch is served
        (a branch that resolved a conflict, on its own; the reserved batch less a node whose
        wait was interrupted) the validation ahead is stopped: base is about to move, or it
        holds a branch nobody waits for."""
        with self._guard:
            ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.nodes != batch:
            self.release(ahead)
            return None
        return ahead

    def drop(self) -> bool:
        """Stop the validation ahead, if one is reserved (it ran beside a validation that
        failed, or stood on a head that did): True when there was one. Its batch stays the
        next one served, tried as usual."""
        with self._guard:
            ahead, self._ahead = self._ahead, None
        if ahead is not None:
            self.release(ahead)
        return ahead is not None

    def release(self, ahead: Ahead) -> None:
        """Stop it, free its checkout, and count the time it validated for its batch when
        that went unused (dropped, or not trusted): the machine spent it all the same."""
        ahead.stop()
        merged, validation = ahead.merged, ahead.validation
        if not ahead.counted and merged and merged.merged and validation and validation.result:
            count_seconds(merged, validation.result)
        ahead.counted = True
        with self._guard:
            self._busy.discard(ahead.number)

    def starter(self, queue: MergeQueue[Node], on: str, cap: int) -> Callable[[], None]:
        """``MergeQueue.while_validating``'s ``start``: what waits goes ahead, on ``on``."""

        def start() -> None:
            with self._guard:
                if self._ahead is not None:
                    return
                free = [n for n in range(CHECKOUTS) if n not in self._busy]
                nodes = queue.reserve(cap, start) if free else []
                if not nodes:
                    return
                self._ahead = Ahead(nodes, on, free[0])
                self._busy.add(free[0])

        return start


_PIPELINES: dict[FairLock, Pipeline] = {}
_PIPELINES_GUARD = threading.Lock()


def pipeline(ws: Workspace) -> Pipeline:
    with _PIPELINES_GUARD:
        return _PIPELINES.setdefault(ws.merge_lock, Pipeline())


def _stand_on(ws: Workspace, checkout: Path, at: str) -> None:
    """A detached checkout of tgflow's clone at ``at``, clean: made once, then reused; made
    again when it is not one any more (a workspace moved, a checkout half deleted)."""
    if (checkout / ".git").is_file():
        try:
            ws.git(checkout, "reset", "--quiet", "--hard", at)
            ws.git(checkout, "clean", "-fdq")
            return
        except GitError:
            pass
    shutil.rmtree(checkout, ignore_errors=True)
    ws.git(ws.integration, "worktree", "prune")
    checkout.parent.mkdir(parents=True, exist_ok=True)
    ws.git(ws.integration, "worktree", "add", "--quiet", "--detach", str(checkout), at)


def commit_lines(node: Node, base: str | None = None) -> list[str]:
    commits = node.ws.commits_beyond_base(node.branch_ref, base)
    return [f"{sha[:10]} {subject}" for sha, subject in commits]


def summary(node: Node) -> str:
    rec = node.record
    commits = "\n".join(f"- {c}" for c in rec.commits) or "- (none)"
    files = "\n".join(f"- `{f}`" for f in rec.files_changed) or "- (none)"
    merged = rec.merge_commit[:10] if rec.merge_commit else "?"
    return (
        f"Merged into {node.ws.base} by tgflow as {merged} (agent {rec.agent}, attempt "
        f"{node.attempt}, {rec.sessions} session(s)).\n\n"
        f"Commits:\n{commits}\n\nFiles changed:\n{files}"
    )
