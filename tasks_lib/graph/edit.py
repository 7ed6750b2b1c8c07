"""Byte-preserving edits to task files: what the coordinator writes back after a node.

Writing never re-serialises the YAML. Edits are made on the text itself (one status line,
one body section) so unknown keys, key order, comments and the rest of the body stay
byte-for-byte as the user wrote them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from tasks_lib.errors import UsageError
from tasks_lib.graph.markdown import (
    FRONTMATTER,
    TGFLOW_BLOCK,
    TGFLOW_CLOSE,
    TGFLOW_MARKER,
    TGFLOW_OPEN,
    find_section,
    section_span,
)
from tasks_lib.graph.taskfile import SYMLINK, Status

_STATUS_LINE = re.compile(r"^(status[ \t]*:)([^\r\n#]*)(#[^\r\n]*)?(?=\r?$)", re.M)

# A missing status line goes after the first of these keys found (the format's key order).
KEYS_BEFORE_STATUS = ("name", "title", "id")


def _split(text: str) -> tuple[str, str, str, str]:
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    text = text.removeprefix(bom)
    m = FRONTMATTER.match(text)
    if not m:
        raise ValueError("no frontmatter")
    return bom + m.group(1), m.group(2), m.group(3), text[m.end() :]


def _newline(text: str) -> str:
    """The file's own line ending, so edits never mix CRLF into an LF file or vice versa."""
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def set_status(text: str, status: Status) -> str:
    """Change only the value on the ``status:`` line (insert one after ``name:``/``id:``).

    A trailing comment and the spacing around the value are kept; a file that already holds
    this status (quoted or not) comes back unchanged.
    """
    opening, meta, closing, rest = _split(text)
    m = _STATUS_LINE.search(meta)
    if m:
        key, value, comment = m.group(1), m.group(2), m.group(3) or ""
        if value.strip().strip("\"'") == status.value:
            return text
        lead = value[: len(value) - len(value.lstrip(" \t"))] or " "
        trail = value[len(value.rstrip(" \t")) :] if comment else ""
        meta = meta[: m.start()] + key + lead + status.value + trail + comment + meta[m.end() :]
    else:
        anchors = (re.search(rf"^{k}[ \t]*:[^\r\n]*\r?\n", meta, re.M) for k in KEYS_BEFORE_STATUS)
        at = next((a.end() for a in anchors if a), 0)
        meta = meta[:at] + f"status: {status.value}{_newline(text)}" + meta[at:]
    return opening + meta + closing + rest


def set_section(text: str, title: str, content: str) -> str:
    """Replace the content of ``## title`` (or append the section at the end of the body).

    Only that section's text changes; the file's line endings are used for the new text.
    """
    opening, meta, closing, rest = _split(text)
    nl = _newline(text)
    content = content.replace("\r\n", "\n").strip("\n").replace("\n", nl)
    block = f"{nl}{nl}{content}{nl}" if content else nl
    span = section_span(rest, title)
    if span is None:
        sep = "" if rest.endswith(nl + nl) else (nl if rest.endswith(nl) else nl + nl)
        rest = f"{rest}{sep}## {title}{block}"
    else:
        _, head_end, end = span
        tail = rest[end:]
        rest = rest[:head_end] + block + (nl if tail else "") + tail
    return opening + meta + closing + rest


def tgflow_block(content: str, when: datetime | None = None) -> str:
    """tgflow's text as it goes into a task file: marked, so a later write tells it from a
    person's, and dated, so a reader knows when it came. Marker lines inside ``content``
    (an agent's words can hold anything) are dropped so they cannot end the block early."""
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    text = TGFLOW_MARKER.sub("", content.replace("\r\n", "\n")).strip("\n")
    return f"{TGFLOW_OPEN}\n**tgflow, {stamp}:**\n\n{text}\n\n{TGFLOW_CLOSE}"


def add_to_section(text: str, title: str, content: str, *, replace_own: bool = False) -> str:
    """Add tgflow's ``content`` as a block below what ``## title`` holds (or start the section).

    With ``replace_own``, tgflow's earlier blocks there go first (a Summary written again
    after a reset); what a person wrote there always stays, in place, as they wrote it.
    """
    kept = find_section(_split(text)[3], title) or ""
    if replace_own:
        kept = TGFLOW_BLOCK.sub("", kept).strip()
    block = tgflow_block(content)
    return set_section(text, title, f"{kept}\n\n{block}" if kept else block)


def _refuse_link(path: Path) -> None:
    """Writing through a link would change a file outside the repository (and commit it)."""
    if path.is_symlink():
        raise UsageError(f"{path}: {SYMLINK}")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file + rename: an interrupted write never leaves half a task file."""
    _refuse_link(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_task_file(
    path: Path,
    *,
    status: Status | None = None,
    note: str | None = None,
    summary: str | None = None,
) -> bool:
    """Apply the coordinator's edits to a task file on disk. Returns whether it changed.

    ``note`` is added under ``## Notes``; ``summary`` replaces tgflow's earlier Summary, both
    in a dated tgflow block below whatever a person wrote there.
    """
    _refuse_link(path)
    original = path.read_bytes().decode("utf-8")  # keep \r\n: read_text would translate it
    text = original
    if status is not None:
        text = set_status(text, status)
    if note is not None:
        text = add_to_section(text, "Notes", note)
    if summary is not None:
        text = add_to_section(text, "Summary", summary, replace_own=True)
    if text == original:
        return False
    _write_atomic(path, text.encode("utf-8"))
    return True
