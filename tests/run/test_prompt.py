"""The prompt: the markers the agents rely on, the task verbatim, the protocol blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks_lib.graph.taskfile import parse_task
from tasks_lib.run.prompt import PromptTemplateError, build_prompt

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
