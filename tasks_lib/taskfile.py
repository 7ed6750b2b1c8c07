"""Task files: the taskgraph markdown format, read faithfully and edited without damage.

Parsing goes through python-frontmatter; writing never re-serialises the YAML. Edits are
made on the text itself (one status line, one body section) so unknown keys, key order,
comments and the rest of the body stay byte-for-byte as the user wrote them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import frontmatter
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)


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
    if not text.lstrip("\ufeff").startswith("---"):
        return None, [Problem(path, "no YAML frontmatter (the file must start with '---')")], []
    try:
        post = frontmatter.loads(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, [Problem(path, f"frontmatter is not valid YAML: {first}")], []
    if not post.metadata:
        return None, [Problem(path, "empty frontmatter")], []
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
        for w in warnings:
            log.warning("%s", w)
        if task is not None:
            result.tasks.append(task)
    return result


# --- editing ---------------------------------------------------------------------------

_FRONTMATTER = re.compile(r"\A(\ufeff?---[ \t]*\r?\n)(.*?)(^---[ \t]*$)", re.S | re.M)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def _split(text: str) -> tuple[str, str, str, str]:
    m = _FRONTMATTER.match(text)
    if not m:
        raise ValueError("no frontmatter")
    return m.group(1), m.group(2), m.group(3), text[m.end() :]


def set_status(text: str, status: Status) -> str:
    """Change only the ``status:`` line (insert one after ``name:``/``id:`` if absent)."""
    opening, meta, closing, rest = _split(text)
    line = re.compile(r"^status[ \t]*:.*?$", re.M)
    if line.search(meta):
        meta = line.sub(f"status: {status.value}", meta, count=1)
    else:
        newline = "\r\n" if "\r\n" in meta else "\n"
        anchor = re.search(r"^(?:name|title|id)[ \t]*:.*?$\r?\n", meta, re.M)
        at = anchor.end() if anchor else 0
        meta = meta[:at] + f"status: {status.value}{newline}" + meta[at:]
    return opening + meta + closing + rest


def _find_heading(body: str, title: str) -> re.Match[str] | None:
    for m in _HEADING.finditer(body):
        if m.group(2).strip().lower() == title.lower():
            return m
    return None


def _section_span(body: str, title: str) -> tuple[int, int, int] | None:
    """(heading start, content start, content end) of the first heading named ``title``."""
    m = _find_heading(body, title)
    if not m:
        return None
    level = len(m.group(1))
    end = len(body)
    for nxt in _HEADING.finditer(body, m.end()):
        if len(nxt.group(1)) <= level:
            end = nxt.start()
            break
    return m.start(), m.end(), end


def find_section(body: str, title: str) -> str | None:
    span = _section_span(body, title)
    return None if span is None else body[span[1] : span[2]].strip()


def set_section(text: str, title: str, content: str) -> str:
    """Replace the content of ``## title`` (or append the section at the end of the body)."""
    opening, meta, closing, rest = _split(text)
    content = content.strip("\n")
    span = _section_span(rest, title)
    if span is None:
        sep = "" if rest.endswith("\n\n") else ("\n" if rest.endswith("\n") else "\n\n")
        rest = f"{rest}{sep}## {title}\n\n{content}\n"
    else:
        _, start, end = span
        tail = rest[end:]
        rest = rest[:start] + f"\n\n{content}\n" + ("\n" if tail else "") + tail
    return opening + meta + closing + rest


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
    path.write_bytes(text.encode("utf-8"))
    return True
