"""Task files: the taskgraph markdown format, read faithfully and edited without damage.

Parsing goes through python-frontmatter; writing never re-serialises the YAML. Edits are
made on the text itself (one status line, one body section) so unknown keys, key order,
comments and the rest of the body stay byte-for-byte as the user wrote them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import frontmatter
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class Status(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"
    BLOCKED = "blocked"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Scope(StrEnum):
    SINGLE = "single"
    NARROW = "narrow"
    MODERATE = "moderate"
    BROAD = "broad"
    SYSTEM = "system"

    @property
    def cost(self) -> int:
        return list(Scope).index(self) + 1


class Risk(StrEnum):
    TRIVIAL = "trivial"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def success_probability(self) -> float:
        return {"trivial": 0.98, "low": 0.90, "medium": 0.80, "high": 0.65, "critical": 0.50}[
            self.value
        ]


class Impact(StrEnum):
    ISOLATED = "isolated"
    COMPONENT = "component"
    PHASE = "phase"
    PROJECT = "project"

    @property
    def weight(self) -> float:
        return {"isolated": 1.0, "component": 1.5, "phase": 2.0, "project": 3.0}[self.value]


class Level(StrEnum):
    PLANNING = "planning"
    DECOMPOSITION = "decomposition"
    IMPLEMENTATION = "implementation"
    REVIEW = "review"
    RESEARCH = "research"


# Status values seen in real files that mean a known status.
STATUS_DRIFT: dict[str, Status] = {
    "done": Status.COMPLETED,
    "complete": Status.COMPLETED,
    "in_progress": Status.IN_PROGRESS,
    "inprogress": Status.IN_PROGRESS,
    "todo": Status.PENDING,
}

# Used for the critical path and priorities when a task gives no scope.
DEFAULT_COST = Scope.MODERATE.cost


class Task(BaseModel):
    """One task file's frontmatter plus the body sections tgflow uses."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    status: Status = Status.PENDING
    depends_on: tuple[str, ...] = ()
    priority: Priority | None = None
    tags: tuple[str, ...] = ()
    created: datetime | None = None
    modified: datetime | None = None
    assignee: str | None = None
    due: str | None = None
    scope: Scope | None = None
    risk: Risk | None = None
    impact: Impact | None = None
    level: Level | None = None
    # Not in the taskgraph format (its tools ignore unknown keys): per-task agent choice.
    agent: str | None = None
    model: str | None = None

    path: Path = Field(exclude=True)
    body: str = Field(default="", exclude=True, repr=False)

    @field_validator("id", "name", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) else v

    @field_validator("depends_on", "tags", mode="before")
    @classmethod
    def _list_or_none(cls, v: Any) -> Any:
        if v is None:
            return ()
        if isinstance(v, str):
            return (v,)
        if isinstance(v, list | tuple):  # YAML reads `depends_on: [1, 2]` as numbers
            return tuple(str(x) if isinstance(x, int | float) else x for x in v)
        return v

    @field_validator("due", mode="before")
    @classmethod
    def _due_as_text(cls, v: Any) -> Any:
        return v.isoformat() if hasattr(v, "isoformat") else v

    @property
    def cost(self) -> int:
        return self.scope.cost if self.scope else DEFAULT_COST

    @property
    def needs_decomposition(self) -> bool:
        """The format's rule: high/critical risk or broad/system scope should be split."""
        return self.risk in (Risk.HIGH, Risk.CRITICAL) or self.scope in (Scope.BROAD, Scope.SYSTEM)

    def section(self, title: str) -> str | None:
        return find_section(self.body, title)

    @property
    def description(self) -> str:
        """The Description section, or the whole body when the file has no such heading."""
        found = self.section("Description")
        return found if found is not None else self.body.strip()


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class LoadResult:
    tasks: list[Task] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def _normalise(meta: dict[str, Any], path: Path, warnings: list[Problem]) -> dict[str, Any]:
    data = dict(meta)
    if "name" not in data and "title" in data:
        data["name"] = data["title"]
    if "depends_on" not in data and "dependsOn" in data:
        data["depends_on"] = data["dependsOn"]
    status = data.get("status")
    if isinstance(status, str) and status.strip().lower() in STATUS_DRIFT:
        fixed = STATUS_DRIFT[status.strip().lower()]
        warnings.append(Problem(path, f"status '{status}' read as '{fixed.value}'"))
        data["status"] = fixed
    return data


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "frontmatter"
        if e["type"] == "missing":
            parts.append(f"missing required field '{where}'")
        elif e["type"] == "enum":
            allowed = e.get("ctx", {}).get("expected", "")
            parts.append(f"invalid {where} {e['input']!r} (expected {allowed})")
        else:
            parts.append(f"invalid {where} {e.get('input')!r}: {e['msg']}")
    return "; ".join(parts)


def parse_task(text: str, path: Path) -> tuple[Task | None, list[Problem], list[Problem]]:
    """Parse one file's text. Returns the task (or None) with its problems and warnings."""
    warnings: list[Problem] = []
    text = text.removeprefix("\ufeff")  # python-frontmatter does not see '---' after a BOM
    if not text.startswith("---"):
        return None, [Problem(path, "no YAML frontmatter (the file must start with '---')")], []
    if not _FRONTMATTER.match(text):
        return None, [Problem(path, "frontmatter is not closed by a '---' line")], []
    try:
        post = frontmatter.loads(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, [Problem(path, f"frontmatter is not valid YAML: {first}")], []
    if not post.metadata:
        problem = Problem(path, "frontmatter holds no 'key: value' pairs (it needs id and name)")
        return None, [problem], []
    data = _normalise(post.metadata, path, warnings)
    try:
        task = Task.model_validate({**data, "path": path, "body": post.content})
    except ValidationError as e:
        return None, [Problem(path, _describe(e))], warnings
    return task, [], warnings


def load_tasks(tasks_dir: Path) -> LoadResult:
    """Read every ``*.md`` below ``tasks_dir``. Problems are collected, never raised."""
    result = LoadResult()
    tasks_dir = Path(tasks_dir)
    if not tasks_dir.is_dir():
        result.problems.append(Problem(tasks_dir, "tasks folder not found"))
        return result
    for path in sorted(tasks_dir.rglob("*.md")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            result.problems.append(Problem(path, f"cannot read: {e}"))
            continue
        task, problems, warnings = parse_task(text, path)
        result.problems.extend(problems)
        result.warnings.extend(warnings)
        if task is not None:
            result.tasks.append(task)
    return result


# --- editing ---------------------------------------------------------------------------

# The closing line may be CRLF-terminated; python-frontmatter accepts any run of 3+ dashes.
_FRONTMATTER = re.compile(r"\A(-{3,}[ \t]*\r?\n)(.*?)(^-{3,}[ \t]*\r?$)", re.S | re.M)
_HEADING = re.compile(r"(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_STATUS_LINE = re.compile(r"^(status[ \t]*:)([^\r\n#]*)(#[^\r\n]*)?(?=\r?$)", re.M)


def _split(text: str) -> tuple[str, str, str, str]:
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    text = text.removeprefix(bom)
    m = _FRONTMATTER.match(text)
    if not m:
        raise ValueError("no frontmatter")
    return bom + m.group(1), m.group(2), m.group(3), text[m.end() :]


def _newline(text: str) -> str:
    """The file's own line ending, so edits never mix CRLF into an LF file or vice versa."""
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


# A missing status line goes after the first of these keys found (the format's key order).
KEYS_BEFORE_STATUS = ("name", "title", "id")


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


def _headings(body: str) -> list[tuple[int, int, int, str]]:
    """(line start, end of heading text, level, title) of ATX headings outside code fences."""
    found: list[tuple[int, int, int, str]] = []
    fence = ""
    offset = 0
    for raw in body.splitlines(keepends=True):
        line = raw.rstrip("\r\n")
        opener = _FENCE.match(line)
        if fence:
            closes = (
                opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence)
            )
            if closes and not line[opener.end() :].strip():
                fence = ""
        elif opener:
            fence = opener.group(1)
        else:
            m = _HEADING.fullmatch(line)
            if m:
                found.append((offset, offset + len(line), len(m.group(1)), m.group(2).strip()))
        offset += len(raw)
    return found


def _section_span(body: str, title: str) -> tuple[int, int, int] | None:
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
    span = _section_span(body, title)
    return None if span is None else body[span[1] : span[2]].strip()


def set_section(text: str, title: str, content: str) -> str:
    """Replace the content of ``## title`` (or append the section at the end of the body).

    Only that section's text changes; the file's line endings are used for the new text.
    """
    opening, meta, closing, rest = _split(text)
    nl = _newline(text)
    content = content.replace("\r\n", "\n").strip("\n").replace("\n", nl)
    block = f"{nl}{nl}{content}{nl}" if content else nl
    span = _section_span(rest, title)
    if span is None:
        sep = "" if rest.endswith(nl + nl) else (nl if rest.endswith(nl) else nl + nl)
        rest = f"{rest}{sep}## {title}{block}"
    else:
        _, head_end, end = span
        tail = rest[end:]
        rest = rest[:head_end] + block + (nl if tail else "") + tail
    return opening + meta + closing + rest


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file + rename: an interrupted write never leaves half a task file."""
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
    notes: str | None = None,
    summary: str | None = None,
) -> bool:
    """Apply the coordinator's edits to a task file on disk. Returns whether it changed."""
    original = path.read_bytes().decode("utf-8")  # keep \r\n: read_text would translate it
    text = original
    if status is not None:
        text = set_status(text, status)
    if notes is not None:
        text = set_section(text, "Notes", notes)
    if summary is not None:
        text = set_section(text, "Summary", summary)
    if text == original:
        return False
    _write_atomic(path, text.encode("utf-8"))
    return True
