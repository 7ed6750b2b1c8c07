"""Fault cases of tgflow itself dying: ``kill -9`` of a ``tgflow run`` while an agent works
and while post-merge validation runs, then a rerun. Real processes: the CLI as a user starts
it, with its own Prefect home, the scripted agent, and a marker in the environment of
everything it starts, so what outlives it is found in /proc."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from faults.invariants import (
    TGFLOW,
    add_user_refs,
    assert_invariants,
    marked_commits,
    marked_env,
    snapshot,
    survivors,
)
from helpers.gitrepos import git, log, make_origin, push_change, show, task_md

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = "test -f README.md"
PERSON = "Written by a person, kept by tgflow."
PHASE_TIMEOUT_S = 180.0


def sleeper(label: str) -> str:
    """A long sleep whose command line carries ``label``: the phase it stands for is
    visible in /proc, with no file written from inside the (maybe sandboxed) session. The
    shell joins ``label`` from two quoted halves, so the command that holds this text (the
    validation command is in tgflow's own argv) does not carry the label itself."""
    head, tail = label[: len(label) // 2], label[len(label) // 2 :]
    return f"{sys.executable} -c 'import time; time.sleep(300)' '{head}''{tail}'"


def waiter(label: str, release: Path) -> str:
    """Like ``sleeper``, but it ends once ``release`` exists (the test decides when)."""
    head, tail = label[: len(label) // 2], label[len(label) // 2 :]
    wait = (
        "import os, sys, time; "
        "[time.sleep(0.1) for _ in iter(lambda: os.path.exists(sys.argv[1]), True)]"
    )
    return f"{sys.executable} -c '{wait}' {release} '{head}''{tail}'"


def wait_for_phase(phase: str) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while not survivors(phase):
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached {phase}")
        time.sleep(0.1)


def run_argv(origin: Path, tmp_path: Path, *validate: str) -> list[str]:
    checks = [arg for command in (VALIDATE, *validate) for arg in ("--validate", command)]
    return [
        str(TGFLOW), "run", "--origin", str(origin), "--workspace", str(tmp_path / "ws"),
        "--agent", "scripted", *checks, "--retries", "0",
    ]  # fmt: skip


def kill_in_phase(
    argv: list[str], env: dict[str, str], phase: str, meanwhile: Callable[[], None]
) -> str:
    """Start ``argv``, run ``meanwhile``, SIGKILL it once a process labelled ``phase`` runs;
    its output."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        meanwhile()
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while not survivors(phase):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"never reached {phase}: {proc.communicate()[0]}")
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        return proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill_then_rerun(
    tmp_path: Path,
    origin: Path,
    mark: str,
    phase: str,
    *validate: str,
    after_kill: Callable[[], None] = lambda: None,
    meanwhile: Callable[[], None] = lambda: None,
) -> None:
    """Kill tgflow in ``phase``, rerun it, and check that the rerun completes the graph with
    every agent commit of both runs on the origin and nothing of the killed run alive."""
    before = snapshot(origin)
    env = marked_env(mark, tmp_path / "prefect-home")
    argv = run_argv(origin, tmp_path, *validate)
    killed_out = kill_in_phase(argv, env, phase, meanwhile)
    after_kill()
    (tmp_path / "killed").touch()  # the rerun's agent and validation do not sleep again
    made = marked_commits([tmp_path / "ws"], mark)
    assert made, f"no agent commit marked {mark} under {tmp_path / 'ws'} after the kill"

    rerun = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "every node completed" in rerun.stdout + rerun.stderr
    made |= marked_commits([tmp_path / "ws"], mark)
    assert_invariants(
        origin, before=before, validate=[VALIDATE, *validate], agent_commits=made, marker=mark,
        output=[killed_out, rerun.stdout, rerun.stderr], user_text={"tasks/a.md": PERSON},
    )  # fmt: skip


def an_agent_that_commits_then_works_on(tmp_path: Path, mark: str) -> Path:
    """An origin whose task a's agent commits a.txt (work a kill must not lose), then works
    on (a sleep labelled ``<mark>-agent``) until the test's ``killed`` file exists."""
    commit = f"git add -A && {{ git diff --cached --quiet || git commit -q -m 'a: {mark}'; }}"
    steps: list[dict] = [
        {"write": {"path": "a.txt", "content": "a\n"}},
        {"run": commit},
        {"run": f"test -e {tmp_path / 'killed'} || {sleeper(f'{mark}-agent')}; true"},
    ]
    origin = make_origin(
        tmp_path,
        {
            "README.md": "demo\n",
            "tasks/a.md": task_md("a", steps=steps, extra_body=f"\n## Notes\n\n{PERSON}\n"),
        },
    )
    add_user_refs(origin)
    return origin


def test_kill_9_while_an_agent_works_then_a_rerun_completes_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """The agent dies with the killed tgflow, and the rerun merges the commit it had made."""
    mark = f"tgflow-fault-{uuid.uuid4().hex}"
    origin = an_agent_that_commits_then_works_on(tmp_path, mark)

    kill_then_rerun(tmp_path, origin, mark, f"{mark}-agent")

    assert show(origin, "a.txt") == "a"
    assert log(origin).count("Merge task a: Task a") == 1


@pytest.mark.serial
def test_kill_9_during_post_merge_validation_then_a_rerun_completes_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """The validation dies with the killed tgflow, the origin's main gets no half-validated
    merge, and the rerun merges the task once. (Someone pushes while the branch is
    validated, so the merged tree is new and validated again: the phase killed.)"""
    mark = f"tgflow-fault-{uuid.uuid4().hex}"
    steps: list[dict] = [{"write": {"path": "a.txt", "content": "a\n"}}, {"commit": mark}]
    origin = make_origin(
        tmp_path,
        {
            "README.md": "demo\n",
            "tasks/a.md": task_md("a", steps=steps, extra_body=f"\n## Notes\n\n{PERSON}\n"),
        },
    )
    add_user_refs(origin)
    # Only after the merge: its commit is beneath the task's status commit, which a merged
    # tree holds when it is validated.
    merged = "git log -2 --format=%s | grep -q '^Merge task'"
    killed = tmp_path / "killed"
    stall = f"test -e {killed} || {sleeper(f'{mark}-validating')}"
    release = tmp_path / "released"
    on_branch = f"test -e {killed} || {waiter(f'{mark}-branch', release)}"

    def someone_pushes_while_the_branch_is_validated() -> None:
        wait_for_phase(f"{mark}-branch")
        push_change(origin, tmp_path, "theirs.txt", "theirs\n", "their change")
        release.touch()

    def nothing_merged_on_the_origin() -> None:
        assert not [s for s in log(origin) if s.startswith("Merge task")], log(origin)

    kill_then_rerun(
        tmp_path, origin, mark, f"{mark}-validating",
        f"if {merged}; then {stall}; else {on_branch}; fi",
        after_kill=nothing_merged_on_the_origin,
        meanwhile=someone_pushes_while_the_branch_is_validated,
    )  # fmt: skip

    assert show(origin, "a.txt") == "a"
    assert log(origin).count("Merge task a: Task a") == 1


def test_kill_9_with_the_machine_lost_then_a_run_elsewhere_resumes_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    """The agent's commit reached the origin while it worked, so a run on another machine (a
    new workspace, the killed run's deleted with its disk) resumes from it and merges it."""
    mark = f"tgflow-fault-{uuid.uuid4().hex}"
    origin = an_agent_that_commits_then_works_on(tmp_path, mark)
    before = snapshot(origin)
    env = marked_env(mark, tmp_path / "prefect-home")
    checkpoint = "refs/tgflow/checkpoint/a"

    def checkpointed() -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while not git(origin, "for-each-ref", checkpoint):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {checkpoint} on the origin")
            time.sleep(0.2)

    killed_out = kill_in_phase(run_argv(origin, tmp_path), env, f"{mark}-agent", checkpointed)
    agent_commit = git(origin, "rev-parse", checkpoint)
    shutil.rmtree(tmp_path / "ws")  # the machine is gone, its disk with it
    (tmp_path / "killed").touch()
    elsewhere = run_argv(origin, tmp_path)
    elsewhere[elsewhere.index("--workspace") + 1] = str(tmp_path / "ws-elsewhere")

    rerun = subprocess.run(
        elsewhere, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert mark in git(origin, "log", "-1", "--format=%s", f"{agent_commit}")
    assert show(origin, "a.txt") == "a" and log(origin).count("Merge task a: Task a") == 1
    assert git(origin, "for-each-ref", "refs/tgflow/checkpoint/") == ""  # dropped once merged
    assert_invariants(
        origin, before=before, validate=[VALIDATE], agent_commits={agent_commit}, marker=mark,
        output=[killed_out, rerun.stdout, rerun.stderr], user_text={"tasks/a.md": PERSON},
    )  # fmt: skip
