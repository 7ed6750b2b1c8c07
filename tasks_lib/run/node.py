"""One node of the graph, start to finish: develop (worktree → agent → checks) then integrate
(serial merge → validate → status on main → push → cleanup).

The orchestrator decides success, not the agent: the branch must hold new commits, task
files stay untouched, validation passes before and after the merge. Work is never thrown
away: a node that does not finish keeps its branch (backed up on the origin when pushing),
and the next run resumes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tasks_lib.agents.base import Agent, Outcome, SessionRequest, SessionResult
from tasks_lib.git.workspace import WIP_PREFIX, GitError, Workspace, WorkspaceError
from tasks_lib.graph.taskfile import Status, Task, update_task_file
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.prompt import BLOCKED_FILE, PromptTemplateError, build_prompt, fenced
from tasks_lib.run.records import Attempt, Conflict, NodeRecord, NodeStatus
from tasks_lib.run.validation import run_validation

CONVENTION_FILES = ("AGENTS.md", "CONVENTIONS.md")

_OUTCOME_STATUS = {
    Outcome.FAILED: NodeStatus.FAILED,
    Outcome.TIMED_OUT: NodeStatus.TIMED_OUT,
    Outcome.STALLED: NodeStatus.STALLED,
    Outcome.CANCELLED: NodeStatus.CANCELLED,
    Outcome.BLOCKED: NodeStatus.BLOCKED,
}


class _NodeFailed(Exception):
    """Ends the node with this status and reason (the branch is kept)."""

    def __init__(self, status: NodeStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Context:
    task_rel: str
    summaries: dict[str, str]
    conventions: str | None
    template: str | None


def run_node(
    workspace: Workspace,
    task: Task,
    agent: Agent,
    settings: NodeSettings,
    *,
    attempt: int = 1,
    previous_failure: str | None = None,
    dependency_summaries: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    stop_after_develop: bool = False,
    final_attempt: bool = True,
) -> NodeRecord:
    """Develop and integrate one task; always returns a record (git trouble included).

    ``final_attempt``: write a failure to the task file on main (status + ``## Notes``)
    only when no retry follows. ``stop_after_develop`` leaves everything as a crash would.
    """
    run = _NodeRun(
        workspace, task, agent, settings, attempt, previous_failure, dependency_summaries,
        on_line or (lambda line: None), cancel or threading.Event(), final_attempt,
    )  # fmt: skip
    rec = run.record
    try:
        try:
            run.run(stop_after_develop)
        except _NodeFailed as e:
            rec.status, rec.reason = e.status, e.reason
            try:
                run.wind_down()
            except (_NodeFailed, WorkspaceError) as trouble:  # the failure above still decides
                rec.notes.append(f"could not record the {rec.status.value} status: {trouble}")
    except WorkspaceError as e:
        rec.status, rec.reason = NodeStatus.FAILED, str(e)
        rec.notes.append("git failed; the task branch (if any) is kept")
    return close_record(rec, attempt)


def close_record(rec: NodeRecord, attempt: int) -> NodeRecord:
    """Stamp the finish time and add this attempt to the record (nodes and reviews alike)."""
    rec.finished_at = datetime.now(UTC)
    rec.attempts.append(
        Attempt(
            number=attempt,
            status=rec.status,
            reason=rec.reason,
            agent_seconds=rec.agent_seconds,
            validate_seconds=rec.validate_seconds,
            sessions=rec.sessions,
        )
    )
    return rec


class _NodeRun:
    def __init__(
        self,
        ws: Workspace,
        task: Task,
        agent: Agent,
        settings: NodeSettings,
        attempt: int,
        previous_failure: str | None,
        summaries: dict[str, str] | None,
        on_line: Callable[[str], None],
        cancel: threading.Event,
        final_attempt: bool,
    ) -> None:
        self.ws, self.task, self.agent, self.settings = ws, task, agent, settings
        self.attempt, self.previous_failure, self.given_summaries = (
            attempt,
            previous_failure,
            summaries,
        )
        self.on_line, self.cancel, self.final_attempt = on_line, cancel, final_attempt
        self.record = NodeRecord(
            task_id=task.id, name=task.name, status=NodeStatus.FAILED, agent=agent.name
        )
        self.worktree: Path | None = None
        self.ctx: _Context | None = None

    # --- the two phases ------------------------------------------------------------------

    def run(self, stop_after_develop: bool) -> None:
        ws, rec = self.ws, self.record
        with ws.merge_lock:
            ws.refresh(self.settings.push)
            on_main = ws.find_task(self.task.id, self.settings.tasks_dir)
            if on_main is None:
                raise _NodeFailed(
                    NodeStatus.FAILED,
                    f"no task file with id {self.task.id!r} under {self.settings.tasks_dir}/ "
                    f"on {ws.base} of {ws.origin}",
                )
            if on_main.status == Status.COMPLETED:
                rec.status, rec.already_done = NodeStatus.COMPLETED, True
                rec.notes.append(f"already completed on {ws.base}; nothing run")
                return
            self.ctx = self._context(on_main)
            checkout = ws.start_task(self.task.id)
        self.worktree = checkout.path
        rec.notes += checkout.notes
        # A retry runs the agent on its kept branch, with the failure in its prompt.
        self._develop(checkout.needs_agent or self.previous_failure is not None)
        if stop_after_develop:
            rec.status = NodeStatus.CANCELLED
            rec.reason = "stopped after develop (as if the run were killed); the branch is kept"
            return
        self._integrate()

    def _develop(self, needs_agent: bool) -> None:
        ws, wt, rec = self.ws, self._wt(), self.record
        if needs_agent:
            (wt / BLOCKED_FILE).unlink(missing_ok=True)
            self._session(self._prompt())
        else:
            rec.notes.append("the branch already held finished work: resumed without the agent")
        if ws.commit_all(wt, f"tgflow: commit uncommitted work of {self.task.id}"):
            rec.notes.append("committed work the agent left uncommitted")
        self._revert_task_files()
        if not ws.commits_ahead(f"refs/heads/{ws.branch(self.task.id)}"):
            raise _NodeFailed(NodeStatus.FAILED, "the agent finished without making any change")
        self._backup_branch()
        self._validate(wt, "on the task branch")

    def _integrate(self) -> None:
        """Merge under the lock; a conflict goes back to the agent (bounded), then again."""
        for round_ in range(1, self.settings.conflict_rounds + 2):
            with self.ws.merge_lock:
                conflicts = self._integrate_locked()
                if conflicts is None:
                    self.record.cleanup = self.ws.cleanup(self.task.id, self.settings.push)
                    self.record.status = NodeStatus.COMPLETED
                    return
            if round_ > self.settings.conflict_rounds:
                break
            self._resolve(round_, conflicts)
        raise _NodeFailed(
            NodeStatus.FAILED,
            f"merge into {self.ws.base} still conflicts after "
            f"{self.settings.conflict_rounds} resolution round(s): "
            + ", ".join(self.record.conflicts[-1].files),
        )

    def _integrate_locked(self) -> list[str] | None:
        """One merge → validate → status → push. Returns the conflicting files, or None."""
        ws, rec = self.ws, self.record
        ws.refresh(self.settings.push)
        branch = f"refs/heads/{ws.branch(self.task.id)}"
        rec.commits = self._commit_lines(branch)
        rec.files_changed = ws.files_changed(branch)
        pending: list[str] = []

        def merge_validate_commit() -> str | None:
            merge = ws.merge(self.task.id, f"Merge task {self.task.id}: {self.task.name}")
            if not merge.merged:
                pending[:] = merge.conflicts
                return "conflicts with " + ", ".join(merge.conflicts)
            try:
                self._validate(ws.integration, f"after merging into {ws.base}")
            except _NodeFailed as e:
                ws.reset_to(merge.pre_sha)
                e.reason = f"{e.reason}\n({ws.base} reset to {merge.pre_sha[:10]}; nothing pushed)"
                raise
            rec.merge_commit = merge.sha
            self._write_task_file(Status.COMPLETED, summary=self._summary())
            return None

        pre = ws.head()
        fallback = f"refs/remotes/origin/{ws.base}" if self.settings.push else pre
        try:
            failure = merge_validate_commit()
            if failure is None and self.settings.push:
                pushed = ws.push_base(merge_validate_commit, self.settings.push_retries)
                failure = None if pushed.pushed else pushed.reason
                if pushed.attempts > 1 and pushed.pushed:
                    rec.notes.append(
                        f"the origin moved during the merge; re-merged and pushed "
                        f"(attempt {pushed.attempts})"
                    )
        except BaseException:
            ws.reset_to(fallback)
            raise
        if failure is None:
            return None
        ws.reset_to(fallback)
        if pending:
            self.record.conflicts.append(
                Conflict(round=len(self.record.conflicts) + 1, files=list(pending))
            )
            return list(pending)
        raise _NodeFailed(NodeStatus.FAILED, failure)

    def _resolve(self, round_: int, files: list[str]) -> None:
        """Merge base into the branch and let the agent resolve what conflicts."""
        ws, wt, rec = self.ws, self._wt(), self.record
        conflict = rec.conflicts[-1]
        ws.git(wt, "clean", "-fdq")  # what validation left; the agent's work is committed
        with ws.merge_lock:  # base must not move under `git merge` (it reads a shared ref)
            base_sha = ws.git(ws.integration, "rev-parse", ws.base_ref())
            merged = self._merge_base_into_branch(wt, base_sha)
        if merged:
            conflict.resolved = True
            rec.notes.append(f"conflict round {round_}: {ws.base} merged into the branch cleanly")
        else:
            files = ws.git(wt, "diff", "--name-only", "--diff-filter=U").split("\n")
            conflict.files = files
            (wt / BLOCKED_FILE).unlink(missing_ok=True)
            self._session(self._prompt(conflict_files=files))  # on failure wind_down aborts
            self._conclude_merge(wt, files, base_sha)
            conflict.resolved = True
        self._revert_task_files()
        self._backup_branch()
        self._validate(wt, "on the task branch after resolving conflicts")

    def _merge_base_into_branch(self, wt: Path, base_sha: str) -> bool:
        message = f"Merge {self.ws.base} into {self.ws.branch(self.task.id)} (resolve conflicts)"
        try:
            self.ws.git(wt, "merge", "--no-edit", "-m", message, base_sha)
        except GitError:
            if not self.ws.in_merge(wt):
                raise
            return False
        return True

    def _conclude_merge(self, wt: Path, files: list[str], base_sha: str) -> None:
        """The agent must leave no conflict markers; we commit a merge it resolved but left.
        ``base_sha`` is the base commit merged in (base itself may move during the session)."""
        ws = self.ws
        marked = [f for f in files if (wt / f).is_file() and _has_markers((wt / f).read_text(
            encoding="utf-8", errors="replace"))]  # fmt: skip
        if marked:
            if ws.in_merge(wt):
                ws.git(wt, "merge", "--abort")
            raise _NodeFailed(
                NodeStatus.FAILED,
                "the agent left conflict markers in " + ", ".join(marked) + "; merge aborted",
            )
        if ws.in_merge(wt):
            ws.git(wt, "add", "-A")
            ws.git(wt, "commit", "--quiet", "--no-edit", "--no-verify")
            self.record.notes.append("committed the merge the agent resolved but left open")
        elif not ws.is_ancestor(base_sha, f"refs/heads/{ws.branch(self.task.id)}"):
            raise _NodeFailed(
                NodeStatus.FAILED, f"the agent abandoned the merge of {ws.base} into the branch"
            )
        elif ws.commit_all(wt, f"tgflow: commit uncommitted work of {self.task.id}"):
            self.record.notes.append("committed work the agent left uncommitted")

    # --- pieces --------------------------------------------------------------------------

    def _wt(self) -> Path:
        assert self.worktree is not None
        return self.worktree

    def _context(self, on_main: Task) -> _Context:
        ws, s = self.ws, self.settings
        loaded = {t.id: t for t in ws.load_tasks(s.tasks_dir).tasks}
        summaries = self.given_summaries
        if summaries is None:
            summaries = {
                dep: (loaded[dep].section("Summary") or "") if dep in loaded else ""
                for dep in on_main.depends_on
            }
        conventions = None
        names = [s.conventions] if s.conventions else list(CONVENTION_FILES)
        for name in names:
            path = ws.integration / name
            if path.is_file():
                conventions = path.read_text(encoding="utf-8", errors="replace")
                break
        else:
            if s.conventions:
                raise _NodeFailed(
                    NodeStatus.FAILED,
                    f"conventions file {s.conventions!r} not found on {ws.base}; "
                    "fix the setting or add the file",
                )
        template = None
        if s.prompt_template:
            path = Path(s.prompt_template).expanduser()
            path = path if path.is_absolute() else ws.integration / path
            if not path.is_file():
                raise _NodeFailed(
                    NodeStatus.FAILED,
                    f"prompt template {s.prompt_template!r} not found (looked at {path})",
                )
            template = path.read_text(encoding="utf-8")
        return _Context(
            task_rel=on_main.path.relative_to(ws.integration).as_posix(),
            summaries=summaries,
            conventions=conventions,
            template=template,
        )

    def _prompt(self, conflict_files: list[str] | None = None) -> str:
        assert self.ctx is not None
        try:
            return build_prompt(
                self.task,
                task_file_rel=self.ctx.task_rel,
                dependency_summaries=self.ctx.summaries,
                conventions=self.ctx.conventions,
                attempt=self.attempt,
                previous_failure=self.previous_failure,
                conflict_files=conflict_files,
                template=self.ctx.template,
            )
        except PromptTemplateError as e:
            raise _NodeFailed(NodeStatus.FAILED, f"{self.settings.prompt_template}: {e}") from None

    def _session(self, prompt: str) -> SessionResult:
        """One agent session; anything but success (or Safe Exit) ends the node."""
        rec, wt = self.record, self._wt()
        result = self.agent.run(
            SessionRequest(
                task_id=self.task.id,
                worktree=wt,
                prompt=prompt,
                timeout_s=self.settings.agent_timeout_s,
                idle_timeout_s=self.settings.idle_timeout_s,
                on_line=self.on_line,
                cancel=self.cancel,
                model=self.task.model,
                env=self.ws.identity_env(),
            )
        )
        rec.sessions += 1
        rec.agent_seconds += result.duration_s
        rec.tool_errors += result.tool_errors
        for name in ("tokens_in", "tokens_out", "cost_usd"):
            value = getattr(result, name)
            if value is not None:
                setattr(rec, name, (getattr(rec, name) or 0) + value)
        blocked = wt / BLOCKED_FILE
        if blocked.is_file() and result.outcome in (
            Outcome.SUCCEEDED, Outcome.FAILED, Outcome.BLOCKED,
        ):  # fmt: skip
            reason = blocked.read_text(encoding="utf-8", errors="replace").strip()
            raise _NodeFailed(NodeStatus.BLOCKED, reason or "the agent gave no reason")
        if result.outcome == Outcome.BLOCKED:
            raise _NodeFailed(NodeStatus.BLOCKED, result.reason or "the agent gave no reason")
        if result.outcome != Outcome.SUCCEEDED:
            raise _NodeFailed(
                _OUTCOME_STATUS[result.outcome],
                f"agent {result.outcome.value}: {result.reason or result.tail}",
            )
        return result

    def _revert_task_files(self) -> None:
        reverted = self.ws.revert_paths(
            self._wt(),
            self.settings.tasks_dir,
            f"tgflow: revert task-file edits made by the agent for {self.task.id}",
        )
        if reverted:
            self.record.notes.append(
                "reverted the agent's edits to task files (only tgflow updates them): "
                + ", ".join(reverted)
            )

    def _validate(self, cwd: Path, where: str) -> None:
        result = run_validation(
            self.settings.validate_commands,
            cwd,
            self.settings.validate_timeout_s,
            self.on_line,
            self.cancel,
        )
        self.record.validate_seconds += result.duration_s
        if not result.ok:
            raise _NodeFailed(NodeStatus.FAILED, f"validation {where} failed: {result.output_tail}")

    def _backup_branch(self) -> None:
        if not self.settings.push:
            return
        with self.ws.merge_lock:
            ok, output = self.ws.push_branch(self.task.id)
        if not ok:
            self.record.notes.append(f"could not back the branch up on the origin: {output}")

    def _commit_lines(self, ref: str) -> list[str]:
        out = self.ws.git(
            self.ws.integration, "log", "--reverse", "--format=%h %s", ref, f"^{self.ws.base_ref()}"
        )
        return [line for line in out.split("\n") if line]

    def _summary(self) -> str:
        rec = self.record
        commits = "\n".join(f"- {c}" for c in rec.commits) or "- (none)"
        files = "\n".join(f"- `{f}`" for f in rec.files_changed) or "- (none)"
        merged = rec.merge_commit[:10] if rec.merge_commit else "?"
        return (
            f"Merged into {self.ws.base} by tgflow as {merged} (agent {rec.agent}, attempt "
            f"{self.attempt}, {rec.sessions} session(s)).\n\n"
            f"Commits:\n{commits}\n\nFiles changed:\n{files}"
        )

    def _write_task_file(
        self, status: Status, *, summary: str | None = None, note: str | None = None
    ) -> bool:
        """Edit the task file in the integration worktree and commit it on base."""
        ws = self.ws
        on_main = ws.find_task(self.task.id, self.settings.tasks_dir)
        if on_main is None:
            raise _NodeFailed(NodeStatus.FAILED, f"task file of {self.task.id} vanished from main")
        notes = None
        if note is not None:
            existing = on_main.section("Notes")
            notes = f"{existing}\n\n{note}" if existing else note
        if not update_task_file(on_main.path, status=status, notes=notes, summary=summary):
            return False
        ws.commit_paths([on_main.path], f"chore: update task {self.task.id} status to {status}")
        return True

    def _record_on_main(self, status: Status, note: str) -> None:
        """Blocked/failed: the status and reason go to the task file on main, pushed."""
        ws = self.ws
        with ws.merge_lock:
            ws.refresh(self.settings.push)
            if not self._write_task_file(status, note=note):
                return
            if self.settings.push:

                def redo() -> str | None:
                    self._write_task_file(status, note=note)
                    return None

                pushed = ws.push_base(redo, self.settings.push_retries)
                if not pushed.pushed:
                    ws.reset_to(f"refs/remotes/origin/{ws.base}")
                    self.record.notes.append(f"could not push the {status} status: {pushed.reason}")

    def wind_down(self) -> None:
        """After a failure: keep the work (WIP commit, branch, origin backup), drop the worktree,
        and record blocked/failed on main when no retry follows."""
        ws, rec = self.ws, self.record
        wt = self.worktree
        if wt is not None and wt.exists():
            rec.notes += ws.save_work(
                wt, f"{WIP_PREFIX}: unfinished work of {self.task.id} ({rec.status.value})"
            )
            branch = ws.branch(self.task.id)
            with ws.merge_lock:
                rec.cleanup["worktree"] = ws.remove_worktree(self.task.id)
                if ws.commits_ahead(f"refs/heads/{branch}"):
                    rec.notes.append(f"kept branch {branch}: it holds work not on {ws.base}")
                else:
                    rec.cleanup["branch"] = ws.delete_branch(self.task.id)
            if rec.cleanup.get("branch") is None:
                self._backup_branch()
        if self.ctx is None:  # failed before reading the task on main: nothing to record there
            return
        if rec.status == NodeStatus.BLOCKED:
            self._record_on_main(Status.BLOCKED, failure_note("blocked", self.attempt, rec.reason))
        elif self.final_attempt and rec.status != NodeStatus.CANCELLED:
            self._record_on_main(
                Status.FAILED, failure_note(rec.status.value, self.attempt, rec.reason)
            )


def failure_note(what: str, attempt: int, reason: str, by: str = "tgflow") -> str:
    """A ``## Notes`` entry: the reason's first line, the rest in a fence it cannot break."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    first, _, rest = reason.strip().partition("\n")
    text = f"**{what}** ({by}, attempt {attempt}, {when}): {first}"
    if rest.strip():
        text += f"\n\n{fenced(rest.strip(), 'text')}"
    return text


def _has_markers(text: str) -> bool:
    lines = text.splitlines()
    return any(x.startswith("<<<<<<< ") for x in lines) and any(
        x.startswith(">>>>>>> ") for x in lines
    )
