"""Task files: the taskgraph markdown format read into ``Task`` models, problems collected.

Parsing goes through python-frontmatter; a file that is not a valid task becomes a
``Problem`` naming it, so one pass over a folder reports every bad file at once. A markdown
file with no frontmatter at all (a README, notes) is not meant as a task: it is skipped with a
warning. Writing a file back is ``tasks_lib.graph.edit``'s job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import frontmatter
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from tasks_lib.errors import UsageError, describe_validation_error
from tasks_lib.graph import frontmatter_yaml
from tasks_lib.graph.markdown import FRONTMATTER, find_section
from tasks_lib.graph.references import referenced_paths, repository_path


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
        """1, 2, 4, 8, 16: each scope about twice the work of the one below. Session times
        spread over orders of magnitude, so scopes are steps of a factor: on a linear 1..5 a
        chain of five single tasks outweighed a system one (``bench/priority_bench.py``: p90
        of makespan / lower bound at 4 slots 0.01-0.02 lower, 1.079 linear, 1.065 geometric;
        at 8 slots within the noise)."""
        return 2 ** list(Scope).index(self)


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

# Used for the critical path and priorities when a task gives no scope: the middle scope.
DEFAULT_COST = Scope.MODERATE.cost


def _inside_the_repository(given: str) -> str:
    path = repository_path(given)
    if path is None:
        raise PydanticCustomError(
            "repository_path",
            "not a path inside the repository; write it relative to the repository root, "
            "a folder with a closing '/'",
        )
    return path


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
    # Not in the taskgraph format either: the repository paths (a folder ends in '/') the task
    # will change, for the scheduler's conflict-aware pick (see ``declared_files``).
    files: tuple[Annotated[str, AfterValidator(_inside_the_repository)], ...] = ()
    # Nor this: what the task's agent sessions may spend in a run (``tasks_lib.run.budget``).
    budget_usd: float | None = Field(None, gt=0)
    budget_tokens: int | None = Field(None, gt=0)

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

    @field_validator("files", mode="before")
    @classmethod
    def _list_of_paths(cls, v: Any) -> Any:
        if v is None:
            return ()
        if not isinstance(v, list | tuple):
            raise PydanticCustomError(
                "files", "must be a list of repository paths, e.g. files: [src/a.py, docs/]"
            )
        return v

    @field_validator("files", mode="after")
    @classmethod
    def _each_once(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v))

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
    def declared_files(self) -> tuple[str, ...]:
        """``files`` and then the paths the References section names, each once: what the
        scheduler keeps apart when it can. Only References are read (a Description's paths
        are often context, not edits), and only tokens that look like paths (see
        ``referenced_paths``): a missed path costs a conflict, a wrong one only an order."""
        refs = self.section("References")
        found = referenced_paths(refs) if refs else ()
        return tuple(dict.fromkeys((*self.files, *found)))

    @property
    def description(self) -> str:
        """The Description section, or the whole body when the file has no such heading."""
        found = self.section("Description")
        return found if found is not None else self.body.strip()


@dataclass(frozen=True)
class Problem:
    """A finding about one file. ``task_ids`` are the tasks it concerns (none when the file
    was not read far enough to know its id): a lenient run holds back only those."""

    path: Path
    message: str
    task_ids: tuple[str, ...] = ()

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


class _LibYAMLHandler(frontmatter.YAMLHandler):
    """python-frontmatter's YAML handler on libyaml's parser when PyYAML has it, building
    Python objects the quick way (``frontmatter_yaml``): parsing is most of reading a folder,
    and the C parser is several times faster. A block it refuses is parsed again by PyYAML's
    own, so a problem is worded as it always was (libyaml words some errors differently)."""

    def load(self, fm: str, **kwargs: object) -> Any:
        try:
            return frontmatter_yaml.load(fm)
        except yaml.YAMLError:
            return super().load(fm, **kwargs)


_YAML = _LibYAMLHandler()


def parse_task(text: str, path: Path) -> tuple[Task | None, list[Problem], list[Problem]]:
    """Parse one file's text. Returns the task (or None) with its problems and warnings."""
    warnings: list[Problem] = []
    text = text.removeprefix("\ufeff")  # python-frontmatter does not see '---' after a BOM
    if not text.startswith("---"):
        skipped = "no YAML frontmatter, so not a task file: skipped (a task file starts with '---')"
        return None, [], [Problem(path, skipped)]
    if not FRONTMATTER.match(text):
        return None, [Problem(path, "frontmatter is not closed by a '---' line")], []
    try:
        post = frontmatter.loads(text, handler=_YAML)
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
        task_id = data.get("id")
        known = (str(task_id),) if isinstance(task_id, str | int | float) and task_id != "" else ()
        return None, [Problem(path, "; ".join(describe_validation_error(e)), known)], warnings
    return task, [], warnings


# A link in the tasks folder could point anywhere on the machine running tgflow: reading
# through it would put that file's content in a prompt or, through a status edit, on main.
SYMLINK = (
    "is a symbolic link; task files must be regular files in the repository "
    "(replace the link with the file)"
)


def _read(path: Path) -> tuple[Task | None, list[Problem], list[Problem]]:
    if path.is_symlink():
        return None, [Problem(path, SYMLINK)], []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, [Problem(path, f"cannot read: {e}")], []
    return parse_task(text, path)


def _markdown_files(tasks_dir: Path, problems: list[Problem]) -> list[Path]:
    """The ``*.md`` files below ``tasks_dir``, in path order, without entering a linked
    folder (each is a problem instead); a linked ``.md`` file is listed so ``_read`` names it.
    """
    found: list[Path] = []
    for root, dirs, files in os.walk(tasks_dir):
        here = Path(root)
        dirs.sort()
        for name in [d for d in dirs if (here / d).is_symlink()]:
            problems.append(Problem(here / name, SYMLINK))
            dirs.remove(name)
        found.extend(here / f for f in files if f.endswith(".md"))
    return sorted(found)


def load_tasks(tasks_dir: Path) -> LoadResult:
    """Read every ``*.md`` below ``tasks_dir``. Problems are collected, never raised."""
    result = LoadResult()
    tasks_dir = Path(tasks_dir)
    if tasks_dir.is_symlink():
        result.problems.append(Problem(tasks_dir, SYMLINK))
        return result
    if not tasks_dir.is_dir():
        result.problems.append(Problem(tasks_dir, "tasks folder not found"))
        return result
    for path in _markdown_files(tasks_dir, result.problems):
        task, problems, warnings = _read(path)
        result.problems.extend(problems)
        result.warnings.extend(warnings)
        if task is not None:
            result.tasks.append(task)
    return result


def read_task(path: Path) -> Task:
    """One task file, for a caller that edits it and must not depend on the rest of the folder.

    Raises a ``UsageError`` naming the file when it is not a valid task (a file without
    frontmatter only warns in a folder, but is no task here); warnings of a task that did
    load (a drifted status spelling) are dropped, as the task already reads them as meant.
    """
    task, problems, warnings = _read(path)
    if task is None:
        raise UsageError("; ".join(str(p) for p in problems or warnings))
    return task
