"""The prompt: the markers the agents rely on, the task verbatim, the protocol blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks_lib.graph.taskfile import parse_task
from tasks_lib.run.prompt import KeptWork, PromptTemplateError, build_prompt, last_failure_note

DESCRIPTION = """Add `calc.add`.

```tgflow-script
- write: {path: calc.py, content: "x = {a}\\n"}
```


Keep   the spacing."""

TEXT = f"""---
id: calc/add
name: Add numbers
depends_on: [calc/base]
---

## Description

{DESCRIPTION}

## Acceptance Criteria

- [ ] add(1, 2) == 3

## References

- docs/calc.md
"""


@pytest.fixture
def task():
    task, problems, _ = parse_task(TEXT, Path("tasks/calc/add.md"))
    assert task is not None, problems
    return task


def test_first_attempt_has_markers_task_sections_and_safe_exit(task) -> None:
    prompt = build_prompt(
        task,
        task_file_rel="tasks/calc/add.md",
        dependency_summaries={"calc/base": "Created calc.py."},
        conventions="Use type hints.",
    )
    assert prompt.startswith("Task: calc/add\nAttempt: 1\nTask file: tasks/calc/add.md\n")
    assert DESCRIPTION in prompt
    for expected in ("add(1, 2) == 3", "docs/calc.md", "Created calc.py.", "Use type hints."):
        assert expected in prompt
    assert "## Safe Exit" in prompt and ".tgflow/blocked.md" in prompt
    assert "## Previous attempt failed" not in prompt
    assert "## Resolve merge conflicts" not in prompt


def test_retry_and_conflict_rounds_carry_their_blocks(task) -> None:
    prompt = build_prompt(
        task,
        task_file_rel="tasks/calc/add.md",
        attempt=3,
        previous_failure="AssertionError: 4 != 3\n```\n## Not a heading",
        conflict_files=["calc.py", "tests/test_calc.py"],
    )
    assert "\nAttempt: 3\n" in prompt
    assert "Attempt 2 did not succeed" in prompt
    assert "````\nAssertionError: 4 != 3\n```\n## Not a heading\n````" in prompt
    assert "## Resolve merge conflicts" in prompt
    assert "- `calc.py`\n- `tests/test_calc.py`" in prompt


def test_user_template_gets_placeholders_and_keeps_the_protocol(task) -> None:
    prompt = build_prompt(
        task,
        task_file_rel="tasks/calc/add.md",
        template="Please do $task_name ($$5 budget):\n$description\n",
        conflict_files=["calc.py"],
    )
    assert "Please do Add numbers ($5 budget):\n" + DESCRIPTION in prompt
    assert prompt.startswith("Task: calc/add\n")
    assert "## Safe Exit" in prompt and "## Resolve merge conflicts" in prompt


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("no description here", r"must contain \$description"),
        ("$description $budget", r"unknown placeholder.*budget"),
        ("$description costs $5", r"malformed"),
    ],
)
def test_bad_templates_are_explained(task, template: str, message: str) -> None:
    with pytest.raises(PromptTemplateError, match=message):
        build_prompt(task, task_file_rel="tasks/calc/add.md", template=template)


def test_prompt_names_the_checks_the_conventions_file_the_rules_and_the_kept_work(task) -> None:
    prompt = build_prompt(
        task,
        task_file_rel="tasks/calc/add.md",
        conventions="Use type hints.",
        conventions_file="AGENTS.md",
        validate_commands=["python -m pytest -q", "ruff check ."],
        protected=["tasks/", ".tgflow.toml", ".github/"],
        kept=KeptWork(
            commits=["abc1234 calc/add: first try", "def5678 tgflow: wip: unfinished work"],
            last_failure="**failed** (tgflow, attempt 1, 2026-01-01 10:00 UTC): validation failed",
        ),
    )
    assert prompt.startswith("Task: calc/add\nAttempt: 1\nTask file: tasks/calc/add.md\n")
    assert DESCRIPTION in prompt
    assert "`python -m pytest -q`" in prompt and "`ruff check .`" in prompt
    assert "`AGENTS.md`" in prompt and "Use type hints." in prompt
    rules = prompt.split("## Rules", 1)[1]
    for expected in ("push", "`tasks/`", "`.tgflow.toml`", "`.github/`", "commit"):
        assert expected in rules
    kept = prompt.split("## Work already on this branch", 1)[1]
    assert "- abc1234 calc/add: first try\n- def5678 tgflow: wip: unfinished work" in kept
    assert "validation failed" in kept
    assert "## Resolve merge conflicts" not in prompt


def test_without_validation_commands_the_prompt_says_only_commits_are_checked(task) -> None:
    prompt = build_prompt(task, task_file_rel="tasks/calc/add.md", validate_commands=[])
    assert "No validation commands are set" in prompt


def test_a_same_run_retry_does_not_repeat_an_older_failure_note(task) -> None:
    prompt = build_prompt(
        task,
        task_file_rel="tasks/calc/add.md",
        attempt=2,
        previous_failure="AssertionError",
        kept=KeptWork(commits=["abc1234 first try"], last_failure="an older run's note"),
    )
    assert "abc1234 first try" in prompt and "AssertionError" in prompt
    assert "an older run's note" not in prompt


def test_the_last_tgflow_failure_note_is_found_among_other_notes() -> None:
    from tasks_lib.run.node_state import failure_note

    older = failure_note("failed", 1, "old reason")
    newer = failure_note("failed", 2, "validation failed:\n```\ntrace\n```")
    notes = f"Written by the user.\n\n{older}\n\n{newer}\n\nA later remark by the user."
    assert last_failure_note(notes) == newer
    assert last_failure_note("Only the user's words.") is None
    assert last_failure_note(None) is None
