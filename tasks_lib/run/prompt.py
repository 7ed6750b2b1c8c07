"""The prompt an agent gets for one task.

Three marker lines come first, always (``Task:``, ``Attempt:``, ``Task file:``), then the body.
The body is the default layout or a user template (``string.Template``) with these
placeholders, each empty when there is nothing to say:

  $task_id $task_name $attempt $task_file   the task and this attempt
  $description                              the Description section, verbatim (required)
  $acceptance_criteria $references          those sections of the task file
  $dependencies                             what the tasks this one depends on did
  $conventions                              the repository's conventions file
  $safe_exit                                how to stop when blocked (a "## Safe Exit" block)
  $previous_failure                         the last attempt's failure output (a block)
  $conflicts                                the "## Resolve merge conflicts" block

The protocol blocks ($safe_exit, $previous_failure, $conflicts) are appended when a template
leaves them out: the orchestrator relies on them.
"""

from __future__ import annotations

import re
from string import Template

from tasks_lib.graph.taskfile import Task

BLOCKED_FILE = ".tgflow/blocked.md"
PROTOCOL_BLOCKS = ("safe_exit", "previous_failure", "conflicts")


class PromptTemplateError(ValueError):
    pass


def fenced(text: str, info: str = "") -> str:
    """A fenced block that output holding its own ``` cannot break out of."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _section(title: str, content: str | None) -> str:
    """A block that starts with a blank line, or nothing: blocks can be placed side by side."""
    return f"\n## {title}\n\n{content.strip()}\n" if content and content.strip() else ""


def _safe_exit(task_file_rel: str) -> str:
    return (
        "\n## Safe Exit\n\n"
        "If you cannot finish this task (a missing dependency, an ambiguity you cannot resolve,\n"
        "checks that still fail after three honest attempts):\n"
        f"1. write the reason to `{BLOCKED_FILE}` at the repository root (it is never "
        "committed);\n"
        "2. commit whatever useful work you have;\n"
        "3. stop.\n\n"
        f"Never edit the task file (`{task_file_rel}`) or any other task file: the orchestrator\n"
        "records the task's status and summary. Commit your work on this branch before you stop.\n"
    )


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
the repository on this task's own branch. Implement the task, run the project's checks, and
commit your work with clear messages.

## Description

$description
$acceptance_criteria$references$dependencies$conventions$previous_failure$conflicts$safe_exit"""


def build_prompt(
    task: Task,
    *,
    task_file_rel: str,
    dependency_summaries: dict[str, str] | None = None,
    conventions: str | None = None,
    attempt: int = 1,
    previous_failure: str | None = None,
    conflict_files: list[str] | None = None,
    template: str | None = None,
) -> str:
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
        "conventions": _section("Repository conventions", conventions),
        "safe_exit": _safe_exit(task_file_rel),
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
