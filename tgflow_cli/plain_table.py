"""Aligned plain-text tables for ``tgflow plan``.

rich laid out the plan's few columns in 0.15 s of a 0.4 s command at 1,000 tasks (and read
brackets in task names as markup); these tables take 2 ms and import nothing the command had
not loaded already. Only the last column wraps, to the terminal's width: the others hold
ids, statuses and numbers, which read badly broken. Widths count terminal cells, so accented
and East Asian names stay aligned.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TextIO
from unicodedata import combining, east_asian_width

INDENT = "  "
GAP = "  "
MIN_ROOM = 20  # the last column's least width, however narrow the terminal

# A cell is text, wrapped between words; the last column's may instead be items, listed
# with ", " and wrapped only between items, so "id (priority)" is never split.
Cell = str | Sequence[str]


def terminal_width() -> int:
    """COLUMNS, else the terminal's width, else 80 (piped output)."""
    return shutil.get_terminal_size((80, 24)).columns


def emphasis(stream: TextIO) -> Callable[[str], str]:
    """Bold for a terminal that has not asked for no color (NO_COLOR, TERM=dumb); plain
    text everywhere else, so piped output and logs hold no escape codes."""
    plain = os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb"
    if plain or not stream.isatty():
        return str
    return lambda text: f"\x1b[1m{text}\x1b[0m"


def cells(text: str) -> int:
    """The terminal cells ``text`` takes: two for wide characters, none for combining ones."""
    if text.isascii():
        return len(text)
    return sum(0 if combining(c) else 2 if east_asian_width(c) in "WF" else 1 for c in text)


def table(
    title: str,
    header: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    width: int,
    right: Collection[int] = (),
    bold: Callable[[str], str] = str,
) -> list[str]:
    """The lines of a table: its title, the header underlined, one row per row (more where
    the last column wraps); columns numbered in ``right`` (numbers) are right-aligned."""
    body = [list(row) for row in rows]
    fixed = [
        max([cells(header[i])] + [cells(_text(row[i])) for row in body])
        for i in range(len(header) - 1)
    ]
    room = max(width - len(INDENT) - sum(w + len(GAP) for w in fixed), MIN_ROOM)
    wrapped = [_wrap(row[-1], room) for row in body]
    last = max([cells(header[-1])] + [cells(line) for lines in wrapped for line in lines])
    widths = [*fixed, last]

    def line(values: Sequence[str]) -> str:
        padded = (
            _pad(v, w, right=i in right)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )
        return (INDENT + GAP.join(padded)).rstrip()

    out = [bold(title), line(header), line(["-" * w for w in widths])]
    for row, lines in zip(body, wrapped, strict=True):
        out.append(line([*(_text(c) for c in row[:-1]), lines[0]]))
        out.extend(line([*([""] * len(fixed)), more]) for more in lines[1:])
    return out


def paragraph(lead: str, text: str, *, width: int, bold: Callable[[str], str] = str) -> list[str]:
    """``lead`` (in bold) and ``text`` wrapped between words to ``width``, the later lines
    indented; the lead is bolded after wrapping, so its escape codes take no width."""
    first, *rest = _wrap(f"{lead} {text}", max(width - len(INDENT), MIN_ROOM))
    return [bold(lead) + first[len(lead) :], *(INDENT + line for line in rest)]


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else ", ".join(cell)


def _pad(text: str, width: int, *, right: bool) -> str:
    space = " " * (width - cells(text))
    return space + text if right else text + space


def _wrap(cell: Cell, room: int) -> list[str]:
    """Lines of at most ``room`` cells, filled greedily; a word or item longer than that has
    a line of its own rather than being cut."""
    if isinstance(cell, str):
        words = cell.split()
    else:
        words = [f"{item}," for item in cell[:-1]] + list(cell[-1:])
    lines: list[str] = []
    current: list[str] = []
    used = 0
    for word in words:
        size = cells(word)
        if current and used + 1 + size > room:
            lines.append(" ".join(current))
            current, used = [], 0
        used += size + (1 if current else 0)
        current.append(word)
    lines.append(" ".join(current))
    return lines
