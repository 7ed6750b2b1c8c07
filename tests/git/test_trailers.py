"""The task trailer added in process (``with_trailer``) is byte for byte what
``git interpret-trailers`` writes, and every other message is left to git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks_lib.git.workspace import with_trailer

TRAILER = "Tgflow-Task: t1"


def by_git(message: str, tmp: Path) -> str:
    path = tmp / "message"
    path.write_bytes(message.encode("utf-8"))
    subprocess.run(
        ["git", "interpret-trailers", "--in-place", "--trailer", TRAILER, str(path)],
        check=True, cwd=tmp,
    )  # fmt: skip
    return path.read_bytes().decode("utf-8")


@pytest.mark.parametrize(
    "message",
    [
        "agent: one file\n",
        "Add the parser\n\nIt reads the frontmatter first.\n",
        "fix: a\nsecond title line\n",
        "Subject\n\nBody: with a colon in its first line\n",  # a trailer block: left to git
        "Subject\n\nSigned-off-by: A <a@example.invalid>\n",
        "Subject\n\nbody\n\nCo-authored-by: B <b@example.invalid>\nnot a trailer\n",
        "Subject\n\n# a comment line\n",
        "Subject\n\n---\npatch part\n",
        "Subject\n\n(cherry picked from commit 0123456789)\n",
        "Subject\n\nbody   \n  \nend\n",
        "Subject\r\n\r\nbody\r\n",
        "\n",  # an empty message (git commit --allow-empty-message)
    ],
)
def test_the_trailer_is_added_as_git_adds_it_or_left_to_git(message: str, tmp_path: Path) -> None:
    ours = with_trailer(message, TRAILER)
    assert ours is None or ours == by_git(message, tmp_path)


def test_the_usual_messages_are_done_in_process() -> None:
    assert with_trailer("agent: one file\n", TRAILER) == f"agent: one file\n\n{TRAILER}\n"
    body = "Add the parser\n\nIt reads the frontmatter first.\n"
    assert with_trailer(body, TRAILER) == f"{body}\n{TRAILER}\n"
    assert with_trailer("Subject\n\nSigned-off-by: A <a@example.invalid>\n", TRAILER) is None


LINES = st.sampled_from(
    ["", " ", "Subject", "fix: x", "Body text", "Token: v", "a-b: c", "  continued",
     "# note", "--- a", "(cherry picked from commit 1)", "x:y", "Key : v", "\t", "end."]
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(LINES, min_size=1, max_size=7))
def test_whenever_it_answers_git_agrees(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    message = "\n".join(lines).strip() + "\n"
    ours = with_trailer(message, TRAILER)
    if ours is not None:
        assert ours == by_git(message, tmp_path_factory.mktemp("m"))
