"""Faults of the git layer: an agent is untrusted code in a checkout of tgflow's clone.

Each case lets the scripted agent (its ``run:`` steps) do what a hostile or careless agent
does to git, then checks that tgflow's own git work is unaffected and nothing is lost. The
sandbox is off here (``sandbox = "none"``): these cases prove the git side alone holds.
"""

from __future__ import annotations

from pathlib import Path

from helpers.gitrepos import branches, git, log, make_origin, show, task_md
from helpers.workspaces import open_ws

from tasks_lib.agents.scripted import ScriptedAgent
from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import NodeSettings
from tasks_lib.run.node import run_node
from tasks_lib.run.records import Cause, NodeRecord, NodeStatus


def run(ws: Workspace, task_id: str) -> NodeRecord:
    task = ws.find_task(task_id)
    assert task is not None
    return run_node(ws, task, ScriptedAgent(), NodeSettings(sandbox="none"))


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(objectname) %(refname)")


def sh(command: str) -> dict:
    return {"run": command}


def write(path: str, content: str) -> dict:
    return {"write": {"path": path, "content": content}}


def test_hooks_path_set_by_the_agent_runs_no_hook_of_tgflow(tmp_path: Path) -> None:
    """tgflow's commits, merges and pushes run no hook the agent installed or configured."""
    marker = tmp_path / "hook-ran"
    hook = f"#!/bin/sh\\necho \\$0 >> {marker}\\nexit 1\\n"
    install = (
        "mkdir -p .githooks && for h in pre-commit commit-msg pre-merge-commit pre-push "
        f"post-checkout; do printf '{hook}' > .githooks/$h; chmod +x .githooks/$h; done && "
        "git config core.hooksPath .githooks"
    )
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md("a", steps=[sh(install), {"no_commit": True}]),
            # b's agent leaves its commit to tgflow: the hook is on main and configured now.
            "tasks/b.md": task_md("b", steps=[write("b.txt", "b\n"), {"no_commit": True}]),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    for task_id in ("a", "b"):
        record = run(ws, task_id)
        assert record.status == NodeStatus.COMPLETED, record.reason
    subjects = log(origin)
    assert "chore: update task a status to completed" in subjects
    assert "chore: update task b status to completed" in subjects
    assert show(origin, "b.txt") == "b"
    assert not marker.exists(), marker.read_text()
    git(origin, "fsck", "--no-progress")


def test_remote_set_url_by_the_agent_does_not_redirect_tgflows_pushes(tmp_path: Path) -> None:
    """tgflow pushes to the origin's URL and puts a repointed origin remote back."""
    other = make_origin(tmp_path, {"README.md": "another project\n"}, name="other.git")
    before = refs(other)
    repoint = (
        f"git remote add origin {other}; git -C ../../integration remote set-url origin {other}"
        "; true"
    )
    origin = make_origin(
        tmp_path, {"tasks/a.md": task_md("a", steps=[write("a.txt", "a\n"), sh(repoint)])}
    )
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "a")
    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, "a.txt") == "a"
    assert "Merge task a: Task a" in log(origin)
    assert refs(other) == before
    assert git(ws.integration, "config", "--get", "remote.origin.url") == str(origin)


def test_deleted_worktree_git_file_never_reaches_the_users_checkout(tmp_path: Path) -> None:
    """A checkout whose .git the agent deleted is relinked; the user's enclosing checkout is
    never touched, and the agent's commits and uncommitted files are merged."""
    user = tmp_path / "user"
    git(tmp_path, "init", "-q", "-b", "main", str(user))
    (user / "mine.txt").write_text("mine\n", encoding="utf-8")
    git(user, "add", "-A")
    git(user, "commit", "-q", "-m", "user work")
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md(
                "a",
                steps=[
                    write("a.txt", "a\n"),
                    sh("git add -A && git commit -q -m 'agent: a'"),
                    write("late.txt", "late\n"),
                    sh("rm .git"),
                    {"no_commit": True},
                ],
            )
        },
    )
    ws = open_ws(origin, user / "tgflow-ws")
    user_head = git(user, "rev-parse", "HEAD")
    record = run(ws, "a")
    assert git(user, "rev-parse", "HEAD") == user_head
    assert git(user, "log", "--format=%s") == "user work"
    assert git(user, "diff", "--cached", "--name-only") == ""
    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, "a.txt") == "a"  # the agent's commit
    assert show(origin, "late.txt") == "late"  # what it left uncommitted


def test_force_push_rewinding_main_stops_the_next_merge_and_keeps_the_lost_commits(
    tmp_path: Path,
) -> None:
    """Main rewound on the origin by someone else stops the next merge, names the lost
    commits and keeps them on refs/tgflow/lost/ (nothing is forced back)."""
    origin = tmp_path / "origin.git"
    make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md("a", steps=[write("a.txt", "a\n")]),
            "tasks/b.md": task_md(
                "b",
                steps=[
                    write("b.txt", "b\n"),
                    sh(f"git push -q --force {origin} $(git rev-list --max-parents=0 HEAD):main"),
                ],
            ),
        },
    )
    initial = git(origin, "rev-parse", "main")
    ws = open_ws(origin, tmp_path / "ws")
    assert run(ws, "a").status == NodeStatus.COMPLETED
    pushed_a = git(origin, "rev-parse", "main")

    record = run(ws, "b")
    assert record.status == NodeStatus.FAILED
    assert record.cause == Cause.GIT
    assert "Merge task a: Task a" in (record.reason or "")
    assert "\n" not in (record.reason or "")
    assert git(origin, "rev-parse", "main") == initial  # tgflow forced nothing back
    lost = git(origin, "for-each-ref", "--format=%(objectname)", "refs/tgflow/lost/")
    assert lost == pushed_a
    assert "b.txt" in git(origin, "ls-tree", "-r", "--name-only", "refs/heads/tgflow/b")


def test_push_refused_by_a_pre_receive_hook_quotes_the_origins_message(tmp_path: Path) -> None:
    """A push the origin refuses fails the node with the origin's own words, on one line."""
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=[write("a.txt", "a\n")])})
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do\n"
        '  if [ "$ref" = refs/heads/main ]; then\n'
        "    echo 'policy: main is frozen until the release is out' >&2; exit 1\n"
        "  fi\ndone\nexit 0\n",
        encoding="utf-8",
    )
    hook.chmod(0o755)
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "a")
    assert record.status == NodeStatus.FAILED
    assert "policy: main is frozen until the release is out" in (record.reason or "")
    assert "\n" not in (record.reason or "")
    assert branches(ws.integration) == ["tgflow/a"]  # main not pushed: the work stays here


def test_origin_refusing_to_delete_branches_still_gets_main_and_keeps_the_branch(
    tmp_path: Path,
) -> None:
    """The merged branch is deleted on the origin in the push of main (one atomic push); an
    origin that refuses the deletion makes that push fail whole: main is pushed alone, the
    node completes, and the branch the origin keeps is reported, not lost."""
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=[write("a.txt", "a\n")])})
    hook = origin / "hooks" / "update"
    hook.write_text(
        "#!/bin/sh\n"
        'if [ "$3" = 0000000000000000000000000000000000000000 ]; then\n'
        "  echo 'policy: branches are never deleted here' >&2; exit 1\n"
        "fi\nexit 0\n",
        encoding="utf-8",
    )
    hook.chmod(0o755)
    ws = open_ws(origin, tmp_path / "ws")
    task = ws.find_task("a")
    assert task is not None
    # With a validation to run, the branch is backed up on the origin before it (without,
    # it would reach the origin only inside the push of main, leaving nothing to delete).
    settings = NodeSettings(sandbox="none", validate_commands=["true"])
    record = run_node(ws, task, ScriptedAgent(), settings)
    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, "a.txt") == "a"
    assert record.cleanup["remote_branch"] is False
    assert "a.txt" in git(origin, "ls-tree", "-r", "--name-only", "refs/heads/tgflow/a")
    # the tracking ref still says what the origin holds
    assert git(ws.integration, "rev-parse", "refs/remotes/origin/tgflow/a") == git(
        origin, "rev-parse", "refs/heads/tgflow/a"
    )


def test_checkout_git_replaced_or_repointed_is_relinked_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """A checkout whose .git the agent replaced (a repository of its own, a link elsewhere)
    is relinked to its git dir, the replacement kept aside; every commit and file is merged."""

    def steps(task_id: str, vandalism: str) -> list[dict]:
        return [
            write(f"{task_id}.txt", task_id),
            sh(f"git add -A && git commit -q -m 'agent: {task_id}'"),
            write(f"late-{task_id}.txt", "late"),
            sh(vandalism),
            {"no_commit": True},
        ]

    elsewhere = make_origin(tmp_path, {"README.md": "elsewhere\n"}, name="elsewhere.git")
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md("a", steps=steps("a", "rm .git && git init -q")),
            "tasks/b.md": task_md("b", steps=steps("b", f"echo 'gitdir: {elsewhere}' > .git")),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    for task_id in ("a", "b"):
        record = run(ws, task_id)
        assert record.status == NodeStatus.COMPLETED, record.reason
        assert show(origin, f"{task_id}.txt") == task_id
        assert show(origin, f"late-{task_id}.txt") == "late"
    assert len(list((ws.root / "displaced").iterdir())) == 2
    assert git(elsewhere, "log", "--format=%s") == "initial"


def test_a_persons_branches_named_like_tgflows_are_never_deleted_or_merged(
    tmp_path: Path,
) -> None:
    """A person's branch named like a task's (an experiment, a bookmark) is never resumed,
    merged or deleted: the task using that name fails saying so, the others go on."""
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md("a", steps=[write("a.txt", "a\n")]),
            "tasks/b.md": task_md("b", steps=[write("b.txt", "b\n")]),
        },
    )
    user = tmp_path / "user"
    git(tmp_path, "clone", "-q", str(origin), str(user))
    git(user, "switch", "-q", "-c", "tgflow/a")
    (user / "experiment.txt").write_text("mine\n", encoding="utf-8")
    git(user, "add", "-A")
    git(user, "commit", "-q", "-m", "my experiment")
    git(user, "push", "-q", "origin", "tgflow/a", "main:tgflow/bookmark")
    before = {r: git(origin, "rev-parse", r) for r in ("tgflow/a", "tgflow/bookmark")}

    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "a")
    assert record.status == NodeStatus.FAILED
    assert "tgflow/a" in record.reason and "did not make" in record.reason
    assert run(ws, "b").status == NodeStatus.COMPLETED
    reconcile(Workspace.open(str(origin), tmp_path / "ws"))

    assert {r: git(origin, "rev-parse", r) for r in before} == before
    assert "experiment.txt" not in git(origin, "ls-tree", "--name-only", "main")
    assert show(origin, "b.txt") == "b"


def test_commits_the_agent_left_off_its_branch_are_kept_on_the_origin(tmp_path: Path) -> None:
    """Commits an agent made on another branch (main of its checkout) or left behind by
    resetting its branch are kept on refs/tgflow/rescued/ on the origin; its HEAD is the work."""
    wander = (
        "git switch -q -c main && echo side > side.txt && git add -A && "
        "git commit -q -m 'agent: on main' && git switch -q tgflow/a && "
        "echo a > a.txt && git add -A && git commit -q -m 'agent: a'"
    )
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=[sh(wander)])})
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "a")
    assert record.status == NodeStatus.COMPLETED, record.reason
    assert show(origin, "a.txt") == "a"
    rescued = git(origin, "for-each-ref", "--format=%(refname)", "refs/tgflow/rescued/")
    assert rescued.startswith("refs/tgflow/rescued/a/"), rescued
    assert git(origin, "show", f"{rescued}:side.txt") == "side"
    assert git(origin, "log", "-1", "--format=%s", rescued) == "agent: on main"
    assert any("refs/tgflow/rescued/a/" in n for n in record.notes)


def test_a_run_without_push_keeps_rescued_commits_in_its_clone_only(tmp_path: Path) -> None:
    """Without push, commits the agent left off its branch are kept in tgflow's clone only:
    the origin is not touched."""
    wander = "git switch -q -c side && echo s > s.txt && git add -A && git commit -q -m side"
    steps = [sh(wander), sh("git switch -q tgflow/a"), write("a.txt", "a\n")]
    origin = make_origin(tmp_path, {"tasks/a.md": task_md("a", steps=steps)})
    before = refs(origin)
    ws = Workspace.open(str(origin), tmp_path / "ws", push=False)
    reconcile(ws, push=False)
    task = ws.find_task("a")
    assert task is not None
    record = run_node(ws, task, ScriptedAgent(), NodeSettings(sandbox="none", push=False))
    assert record.status == NodeStatus.COMPLETED, record.reason
    assert refs(origin) == before
    rescued = git(ws.integration, "for-each-ref", "--format=%(refname)", "refs/tgflow/rescued/")
    assert git(ws.integration, "show", f"{rescued}:s.txt") == "s"


def test_a_stale_index_lock_the_agent_left_is_removed_and_the_work_merged(
    tmp_path: Path,
) -> None:
    """A stale index.lock an agent left (a killed git) is removed after the session, saying
    so; its work is committed and merged, and the next run is not refused."""
    leave_lock = 'touch "$(git rev-parse --git-dir)/index.lock"'
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md(
                "a", steps=[write("a.txt", "a\n"), sh(leave_lock), {"no_commit": True}]
            ),
            "tasks/b.md": task_md("b", steps=[write("b.txt", "b\n")]),
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "a")
    assert record.status == NodeStatus.COMPLETED, record.reason
    assert any("index.lock" in n for n in record.notes)
    assert show(origin, "a.txt") == "a"
    ws = open_ws(origin, tmp_path / "ws")
    assert run(ws, "b").status == NodeStatus.COMPLETED


def test_a_config_the_agent_wrote_in_its_checkout_runs_nothing_of_tgflows(
    tmp_path: Path,
) -> None:
    """Config the agent wrote in its checkout (a clean filter, another work tree) is put
    back before tgflow runs git there: no filter runs, no file is written elsewhere."""
    marker, away = tmp_path / "filter-ran", tmp_path / "away"
    away.mkdir()
    hostile = (
        f"git config filter.evil.clean 'touch {marker}; cat' && "
        "echo '* filter=evil' > .gitattributes && "
        f"git config core.worktree {away}"
    )
    origin = make_origin(
        tmp_path,
        {
            "tasks/a.md": task_md(
                "a", steps=[write("a.txt", "a\n"), sh(hostile), {"no_commit": True}]
            )
        },
    )
    ws = open_ws(origin, tmp_path / "ws")
    record = run(ws, "a")
    assert record.status == NodeStatus.COMPLETED, record.reason
    assert not marker.exists()
    assert list(away.iterdir()) == []
    assert show(origin, "a.txt") == "a"
    assert any("restored the git config" in n for n in record.notes)
