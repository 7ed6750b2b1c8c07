#!/bin/sh
# The yardstick of bench/node_bench.py: the git steps a careful person takes per task, by hand,
# with nothing of tgflow's checks. Per task: a worktree on a new branch from main, one file
# committed there, merged --no-ff into main in the main clone, main pushed, the worktree and
# the branch deleted.
#
# usage: yardstick.sh MAIN_CLONE TASK_ID...   (MAIN_CLONE: a clone with main checked out)
set -eu
export GIT_AUTHOR_NAME=Bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=Bench GIT_COMMITTER_EMAIL=bench@example.invalid
main=$1
shift
cd "$main"
for id in "$@"; do
    wt="../wt-$id"
    git worktree add -q -b "task/$id" "$wt" main
    echo done >"$wt/out-$id.txt"
    git -C "$wt" add -A
    git -C "$wt" commit -qm "$id: one file"
    git merge -q --no-ff -m "Merge task/$id" "task/$id"
    git push -q origin main
    git worktree remove "$wt"
    git branch -q -d "task/$id"
done
