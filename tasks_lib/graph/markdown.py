"""Where a task file's parts are in its text: the frontmatter block and the body's sections.

Reading (``Task.section``) and editing (``set_section``) must agree on which heading a
section is and where it ends, so both locate them here.
"""

from __future__ import annotations

import re

# The closing line may be CRLF-terminated; python-frontmatter accepts any run of 3+ dashes.
FRONTMATTER = re.compile(r"\A(-{3,}[ \t]*\r?\n)(.*?)(^-{3,}[ \t]*\r?$)", re.S | re.M)
_HEADING = re.compile(r"(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")

# tgflow's own text in a task file sits between these lines (HTML comments: invisible when
# rendered), so a later write can replace tgflow's text and never a person's.
TGFLOW_OPEN = "<!-- tgflow -->"
TGFLOW_CLOSE = "<!-- /tgflow -->"
TGFLOW_MARKER = re.compile(r"^[ \t]*<!-- /?tgflow -->[ \t]*\r?$", re.M)
TGFLOW_BLOCK = re.compile(
    r"(?:\r?\n)*^[ \t]*<!-- tgflow -->[ \t]*\r?$.*?^[ \t]*<!-- /tgflow -->[ \t]*\r?$", re.M | re.S
)


def _headings(body: str) -> list[tuple[int, int, int, str]]:
    """(line start, end of heading text, level, title) of ATX headings outside code fences."""
    found: list[tuple[int, int, int, str]] = []
    fence = ""
    offset = 0
    for raw in body.splitlines(keepends=True):
        line = raw.rstrip("\r\n")
        opener = _FENCE.match(line)
        if fence:
            if (
                opener is not None
                and opener.group(1)[0] == fence[0]
                and len(opener.group(1)) >= len(fence)
                and not line[opener.end() :].strip()
            ):
                fence = ""
        elif opener:
            fence = opener.group(1)
        else:
            m = _HEADING.fullmatch(line)
            if m:
                found.append((offset, offset + len(line), len(m.group(1)), m.group(2).strip()))
        offset += len(raw)
    return found


def section_span(body: str, title: str) -> tuple[int, int, int] | None:
    """(heading start, heading end, content end) of the section named ``title``.

    A ``##`` heading wins over other levels (the format's sections are level 2); the
    section runs to the next heading of the same or a higher level.
    """
    heads = _headings(body)
    named = [i for i, h in enumerate(heads) if h[3].lower() == title.lower()]
    if not named:
        return None
    at = next((i for i in named if heads[i][2] == 2), named[0])
    start, head_end, level, _ = heads[at]
    end = next((h[0] for h in heads[at + 1 :] if h[2] <= level), len(body))
    return start, head_end, end


def find_section(body: str, title: str) -> str | None:
    span = section_span(body, title)
    return None if span is None else body[span[1] : span[2]].strip()
