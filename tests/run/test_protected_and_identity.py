"""Issue 10 (7, 8b) on real git: an agent cannot weaken the checks of later runs (edits to
protected paths are reverted before validation), and its commits say who made them."""

from __future__ import annotations

from pathlib import Path

from helpers.gitrepos import git, make_origin, push_change, show, task_md
from helpers.workspaces import open_ws

from tasks_lib.agents.command import CommandAgent
from tasks_lib.agents.registry import make_agent
from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.agents.settings import AgentSettings
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.taskfile import Task, parse_task
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.develop import agent_author
from tasks_lib.run.node import run_node
from tasks_lib.run.node_state import Node
from tasks_lib.run.records import NodeRecord, NodeStatus
from tgflow_cli.main import build_parser
from tgflow_cli.run_command import _config

TOML = 'validate_commands = ["grep -q original .tgflow.toml"]\n# original\n'
CI = "# original ci\non: push\n"


def write(path: str, content: str) -> dict:
    return {"write": {"path": path, "content": content}}


def commit(path: str, content: str, message: str) -> dict:
    """A step where the agent itself commits (as a real agent does, several times)."""
    return {"run": f"printf '{content}' > {path} && git add -A && git commit -qm '{message}'"}


def with_model(text: str, model: str) -> str:
    return text.replace("status: pending\n", f"status: pending\nmodel: {model}\n", 1)


def run(ws: Workspace, task_id: str, settings: NodeSettings) -> NodeRecord:
    task = ws.find_task(task_id)
    assert task is not None
    return run_node(ws, task, ScriptedAgent(), settings)


def agent_commits(origin: Path) -> list[str]:
    """Author | committer | Tgflow-Task trailer of the commits the merge brought, oldest first:
    the second parent's side of the merge commit on main (main~1: the status update is last)."""
    fmt = "%an <%ae>|%cn <%ce>|%(trailers:key=Tgflow-Task,valueonly,separator=%x2C)"
    out = git(origin, "log", "--reverse", f"--format={fmt}", "main~1^2", "^main~1^1")
    return out.split("\n")


def test_edits_to_the_config_ci_and_protected_paths_are_reverted_before_validation(
    tmp_path: Path,
) -> None:
    origin = make_origin(
        tmp_path,
        {
            ".tgflow.toml": TOML,
            ".github/workflows/ci.yml": CI,
            "docs/keep.md": "original docs\n",
            "tasks/a.md": task_md(
                "a",
                steps=[
                    write("a.txt", "a\n"),
                    write(".tgflow.toml", "validate_commands = []\n"),
                    write(".github/workflows/ci.yml", "on: never\n"),
                    write(".github/workflows/new.yml", "on: never\n"),
                    write("docs/keep.md", "weakened\n"),
                ],
            ),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    # The checks read the protected files: they pass only when the edits were undone.
    checks = [
        "grep -q original .tgflow.toml",
        "grep -q 'original ci' .github/workflows/ci.yml",
        "test ! -e .github/workflows/new.yml",
        "grep -q 'original docs' docs/keep.md",
    ]
    settings = NodeSettings(
        validate_commands=checks, protected_paths=[".github/", ".gitlab-ci.yml", "docs/"]
    )
    record = run(ws, "a", settings)

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, ".tgflow.toml") == TOML.strip()
    assert show(origin, ".github/workflows/ci.yml") == CI.strip()
    assert show(origin, "docs/keep.md") == "original docs"
    assert show(origin, "a.txt") == "a"
    assert "new.yml" not in git(origin, "ls-tree", "-r", "--name-only", "main")
    notes = [n for n in record.notes if n.startswith("reverted the agent's edits to protected")]
    assert len(notes) == 1, record.notes
    for name in (
        ".tgflow.toml",
        ".github/workflows/ci.yml",
        ".github/workflows/new.yml",
        "docs/keep.md",
    ):
        assert name in notes[0]


def test_edits_made_while_resolving_a_conflict_are_reverted_too(tmp_path: Path) -> None:
    origin = make_origin(
        tmp_path,
        {
            ".tgflow.toml": TOML,
            "shared.txt": "the line\n",
            "tasks/m.md": task_md(
                "m", steps=[{"replace": {"path": "shared.txt", "old": "the line", "new": "M"}}]
            ),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    assert run_node(ws, _task(ws, "m"), ScriptedAgent(), NodeSettings(), stop_after_develop=True)
    push_change(origin, tmp_path, "shared.txt", "theirs\n", "they edit the same line")
    # The conflict session resolves the conflict, and also weakens the repository's checks
    # (only then: a merge is in progress).
    resolver = CommandAgent(
        ["bash", "-c", "echo resolved > shared.txt; if git rev-parse -q --verify MERGE_HEAD; "
         "then echo 'validate_commands = []' > .tgflow.toml; fi; git add -A; git commit -qm r"]
    )  # fmt: skip
    settings = NodeSettings(validate_commands=["grep -q original .tgflow.toml"])
    record = run_node(ws, _task(ws, "m"), resolver, settings)

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert [c.round for c in record.conflicts] == [1]
    assert show(origin, ".tgflow.toml") == TOML.strip()
    assert show(origin, "shared.txt") == "resolved"
    assert any(
        n.startswith("reverted the agent's edits to protected") and ".tgflow.toml" in n
        for n in record.notes
    ), record.notes
    # The merge the agent committed is marked as its work for the task, like any other commit.
    fmt = "%an <%ae>|%(trailers:key=Tgflow-Task,valueonly)"
    merges = git(origin, "log", f"--format={fmt}", "--merges", "main~1^2", "^main~1^1")
    assert merges == "command agent <agent@tgflow.invalid>|m"


def _task(ws: Workspace, task_id: str) -> Task:
    task = ws.find_task(task_id)
    assert task is not None
    return task


def test_agent_commits_are_authored_by_the_agent_committed_by_tgflow_with_the_task_trailer(
    tmp_path: Path,
) -> None:
    steps = [
        commit("one.txt", "1", "first"),
        commit("two.txt", "2", "second"),
        write("three.txt", "3\n"),
        {"no_commit": True},  # tgflow commits what the agent left: still the agent's work
    ]
    origin = make_origin(tmp_path, {"tasks/a.md": with_model(task_md("a", steps=steps), "m1")})
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "a", NodeSettings())

    assert record.status == NodeStatus.COMPLETED, record.reason
    tgflow = f"{ws.identity[0]} <{ws.identity[1]}>"
    author = "scripted agent (model m1) <agent@tgflow.invalid>"
    assert agent_commits(origin) == [f"{author}|{tgflow}|a"] * 3
    subjects = git(origin, "log", "--reverse", "--format=%s", "main~1^2", "^main~1^1")
    assert subjects.split("\n") == ["first", "second", "tgflow: commit uncommitted work of a"]


def test_a_configured_agent_identity_and_no_model(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"tasks/b.md": task_md("b", steps=[write("b.txt", "b\n")])})
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "b", NodeSettings(agent_identity="Robo Coder <robo@example.invalid>"))
    assert record.status == NodeStatus.COMPLETED, record.reason
    tgflow = f"{ws.identity[0]} <{ws.identity[1]}>"
    assert agent_commits(origin) == [f"Robo Coder <robo@example.invalid>|{tgflow}|b"]

    origin2 = make_origin(
        tmp_path, {"tasks/c.md": task_md("c", steps=[write("c.txt", "c\n")])}, "origin2.git"
    )
    ws2 = Workspace.open(str(origin2), tmp_path / "ws2")
    assert run(ws2, "c", NodeSettings()).status == NodeStatus.COMPLETED
    assert agent_commits(origin2) == [f"scripted agent <agent@tgflow.invalid>|{tgflow}|c"]


def test_an_agent_identity_that_is_not_name_and_email_fails_the_node_with_how_to_fix(
    tmp_path: Path,
) -> None:
    origin = make_origin(tmp_path, {"tasks/d.md": task_md("d", steps=[write("d.txt", "d\n")])})
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "d", NodeSettings(agent_identity="just a name"))
    assert record.status == NodeStatus.FAILED
    assert "agent_identity" in record.reason and "Name <email>" in record.reason


def test_protect_flag_sets_the_protected_paths() -> None:
    args = build_parser().parse_args(
        ["run", "--origin", "/some/origin", "--protect", "docs/", "--protect", "Makefile"]
    )
    assert _config(args).protected_paths == ["docs/", "Makefile"]
    default = _config(build_parser().parse_args(["run", "--origin", "/some/origin"]))
    assert default.protected_paths == [".github/", ".gitlab-ci.yml"]


def test_the_default_author_names_the_model_the_agent_runs_with(tmp_path: Path) -> None:
    def author(agent_settings: AgentSettings, task_text: str) -> tuple[str, str]:
        task, problems, _ = parse_task(task_text, tmp_path / "tasks" / "t.md")
        assert task is not None, problems
        node = Node(
            ws=Workspace(origin=str(tmp_path), root=tmp_path),
            task=task,
            agent=make_agent(agent_settings),
            settings=NodeSettings(),
            attempt=1,
            record=NodeRecord(task_id=task.id, name=task.name, status=NodeStatus.FAILED),
        )
        return agent_author(node)

    claude = AgentSettings(preset="claude", model="run-model")
    plain = task_md("t")
    assert author(claude, plain) == ("claude agent (model run-model)", "agent@tgflow.invalid")
    # the task's own model wins, as it does for the session
    assert author(claude, with_model(plain, "m2"))[0] == "claude agent (model m2)"
    assert author(AgentSettings(preset="claude"), plain)[0] == "claude agent"


def test_protected_patterns_and_files_renamed_out_of_a_protected_folder_are_reverted(
    tmp_path: Path,
) -> None:
    """A pattern (``docs/*.md``) is matched by git, as in any pathspec; a plain folder is
    matched by tgflow from the files the branch changes, a file moved out of it counting
    under its old name too."""
    origin = make_origin(
        tmp_path,
        {
            ".github/workflows/ci.yml": CI,
            "docs/keep.md": "original docs\n",
            "docs/notes.txt": "notes\n",
            "tasks/a.md": task_md(
                "a",
                steps=[
                    write("a.txt", "a\n"),
                    write("docs/keep.md", "weakened\n"),
                    write("docs/notes.txt", "better notes\n"),
                    {"run": "git mv .github/workflows/ci.yml ci-moved.yml"},
                ],
            ),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    settings = NodeSettings(protected_paths=[".github/", "docs/*.md"])

    record = run(ws, "a", settings)

    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, "docs/keep.md") == "original docs"
    assert show(origin, "docs/notes.txt") == "better notes"  # not matched: the agent's
    assert show(origin, ".github/workflows/ci.yml") == CI.strip()
    assert show(origin, "a.txt") == "a"
