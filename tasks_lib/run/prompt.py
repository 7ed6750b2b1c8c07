"""The prompt an agent gets for one task.

Three marker lines come first, always (``Task:``, ``Attempt:``, ``Task file:``), then the body.
The body is the default layout or a user template (``string.Template``) with these
placeholders, each empty when there is nothing to say:

  $task_id $task_name $attempt $task_file   the task and this attempt
  $description                              the Description section, verbatim (required)
  $acceptance_criteria $references          those sections of the task file
  $dependencies                             what the tasks this one depends on did
  $conventions                              the repository's conventions file, named
  $checks                                   the validation commands the branch must pass
  $rules                                    commit, never push, what not to touch
  $safe_exit                                how to stop when blocked (a "## Safe Exit" block)
  $kept_work                                the commits an earlier run left on the branch,
                                            and why that run did not finish
  $previous_failure                         the last attempt's failure output (a block)
  $conflicts                                the "## Resolve merge conflicts" block

The protocol blocks ($rules, $checks, $safe_exit, $kept_work, $previous_failure, $conflicts)
are appended when a template leaves them out: the orchestrator relies on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import Template

from tasks_lib.graph.taskfile import Task

BLOCKED_FILE = ".tgflow/blocked.md"
PROTOCOL_BLOCKS = ("rules", "checks", "safe_exit", "kept_work", "previous_failure", "conflicts")

# The first line of a note tgflow wrote under ``## Notes`` (``node_state.failure_note``).
_FAILURE_NOTE = re.compile(r"^\*\*[^*\n]+\*\* \(tgflow, attempt \d+, [^)\n]*\): .*$", re.M)


class PromptTemplateError(ValueError):
    pass


@dataclass(frozen=True)
class KeptWork:
    """A branch an earlier run left: the agent builds on it instead of starting over."""

    commits: list[str]  # "<short sha> <subject>", oldest first
    last_failure: str | None  # why that run did not finish, when tgflow recorded it


def fenced(text: str, info: str = "") -> str:
    """A fenced block that output holding its own ``` cannot break out of."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def last_failure_note(notes: str | None) -> str | None:
    """The last note tgflow wrote for a failure (its first line and its fenced detail) among
    whatever people wrote in the ``## Notes`` section, or None."""
    starts = list(_FAILURE_NOTE.finditer(notes or ""))
    if not starts:
        return None
    text = (notes or "")[starts[-1].start() :]
    first, _, rest = text.partition("\n")
    detail = re.match(r"\n*(`{3,})\w*\n.*?^\1[ \t]*$", rest, re.S | re.M)
    return f"{first}\n\n{detail.group(0).strip()}" if detail else first


def _section(title: str, content: str | None) -> str:
    """A block that starts with a blank line, or nothing: blocks can be placed side by side."""
    return f"\n## {title}\n\n{content.strip()}\n" if content and content.strip() else ""


def _code(items: list[str]) -> str:
    return ", ".join(f"`{i}`" for i in items)


def _conventions(text: str | None, file: str | None) -> str:
    where = f"From `{file}` in the repository; follow it.\n\n" if file else ""
    return _section("Repository conventions", f"{where}{text}" if text else None)


def _checks(commands: list[str] | None) -> str:
    if commands is None:  # the caller has no say over them (e.g. a review)
        return ""
    if not commands:
        return _section(
            "Checks",
            "No validation commands are set for this repository: tgflow only checks that your "
            "commits are there. Run the project's own tests if it has any.",
        )
    listing = "\n".join(f"- `{c}`" for c in commands)
    return _section(
        "Checks",
        "tgflow runs these commands in the repository root, on your branch and again after "
        f"merging it into the base branch; the task is done only when all of them pass:\n\n"
        f"{listing}\n\nRun them yourself before you finish.",
    )


def _rules(task_file_rel: str, protected: list[str] | None) -> str:
    where = f": {_code(protected)}" if protected else ""
    return _section(
        "Rules",
        "- Commit your work on this branch (`git add`, `git commit`) before you stop: "
        "uncommitted work is committed for you, but your messages explain it better.\n"
        "- Never push, and do not create, switch or delete branches: tgflow merges and pushes.\n"
        f"- Never edit the task file (`{task_file_rel}`) or any other task file, nor the "
        f"paths tgflow protects{where}. Only people change them; tgflow reverts such edits.",
    )


def _safe_exit() -> str:
    return (
        "\n## Safe Exit\n\n"
        "If you cannot finish this task (a missing dependency, an ambiguity you cannot resolve,\n"
        "checks that still fail after three honest attempts):\n"
        f"1. write the reason to `{BLOCKED_FILE}` at the repository root (it is never "
        "committed);\n"
        "2. commit whatever useful work you have;\n"
        "3. stop.\n"
    )


def _kept_work(kept: KeptWork | None, retry: bool) -> str:
    if kept is None or not kept.commits:
        return ""
    listing = "\n".join(f"- {c}" for c in kept.commits)
    text = (
        f"An earlier run of this task left {len(kept.commits)} commit(s) on this branch that "
        f"are not on the base branch (oldest first):\n\n{listing}\n\n"
    )
    if not retry:  # a retry's own failure is in its block; an older note would mislead
        why = kept.last_failure or "no reason was recorded (the run was probably interrupted)."
        text += f"That run did not finish:\n\n{fenced(why, 'text')}\n\n"
    text += (
        "The task may have changed since. Build on this work: find what is missing or wrong, "
        "fix it and commit; start over only where it is unusable."
    )
    return _section("Work already on this branch", text)


def _previous_failure(attempt: int, failure: str | None) -> str:
    if not failure:
        return ""
    return (
        "\n## Previous attempt failed\n\n"
        f"Attempt {attempt - 1} did not succeed. Its output ended with:\n\n"
        f"{fenced(failure.strip())}\n\n"
        "Find and fix the cause; your earlier commits are on this branch.\n"
    )


def _conflicts(files: list[str] | None) -> str:
    if not files:
        return ""
    listing = "\n".join(f"- `{f}`" for f in files)
    return (
        "\n## Resolve merge conflicts\n\n"
        "The base branch moved while you worked and has been merged into your branch; these\n"
        f"files conflict:\n\n{listing}\n\n"
        "Resolve every conflict keeping the intent of both sides, run the checks, then commit\n"
        "the merge (`git add` the files, `git commit --no-edit`).\n"
    )


def _dependencies(summaries: dict[str, str]) -> str:
    return "\n\n".join(
        f"### {dep}\n\n{text.strip() or '(no summary)'}" for dep, text in summaries.items()
    )


DEFAULT_TEMPLATE = """\
# $task_name

You are implementing one task of a task graph. Your working directory is a git worktree of
the repository on this task's own branch. Implement the task, run the checks, and commit
your work with clear messages.

## Description

$description
$acceptance_criteria$references$dependencies$conventions$checks$kept_work$previous_failure\
$conflicts$rules$safe_exit"""


def build_prompt(
    task: Task,
    *,
    task_file_rel: str,
    dependency_summaries: dict[str, str] | None = None,
    conventions: str | None = None,
    conventions_file: str | None = None,
    validate_commands: list[str] | None = None,
    protected: list[str] | None = None,
    attempt: int = 1,
    kept: KeptWork | None = None,
    previous_failure: str | None = None,
    conflict_files: list[str] | None = None,
    template: str | None = None,
) -> str:
    """``validate_commands`` None leaves the checks out (the caller does not run them);
    ``protected``: the paths besides the task files an agent may not change."""
    values = {
        "task_id": task.id,
        "task_name": task.name,
        "attempt": str(attempt),
        "task_file": task_file_rel,
        "description": task.description,
        "acceptance_criteria": _section("Acceptance criteria", task.section("Acceptance Criteria")),
        "references": _section("References", task.section("References")),
        "dependencies": _section(
            "What the tasks this one depends on did", _dependencies(dependency_summaries or {})
        ),
        "conventions": _conventions(conventions, conventions_file),
        "checks": _checks(validate_commands),
        "rules": _rules(task_file_rel, protected),
        "safe_exit": _safe_exit(),
        "kept_work": _kept_work(kept, retry=attempt > 1),
        "previous_failure": _previous_failure(attempt, previous_failure),
        "conflicts": _conflicts(conflict_files),
    }
    body_template = Template(template if template is not None else DEFAULT_TEMPLATE)
    names = set(body_template.get_identifiers())
    if "description" not in names:
        raise PromptTemplateError(
            "the prompt template must contain $description (the task's Description section)"
        )
    unknown = names - values.keys()
    if unknown:
        raise PromptTemplateError(
            f"unknown placeholder(s) in the prompt template: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(values))} (write $$ for a literal $)"
        )
    try:
        body = body_template.substitute(values)
    except ValueError as e:
        raise PromptTemplateError(f"the prompt template is malformed: {e} (write $$ for $)") from e
    body = body.rstrip("\n") + "\n"
    body += "".join(values[b] for b in PROTOCOL_BLOCKS if b not in names)
    header = f"Task: {task.id}\nAttempt: {attempt}\nTask file: {task_file_rel}\n\n"
    return header + body
