#!/usr/bin/env bash
# The plain shell baseline of a signed pull: what an operator would script with git alone.
#
#   bench/shell-sync.sh URL REF ALLOWED_SIGNERS GIT_DIR ROOT
#
# 1. `git fetch` REF from URL into GIT_DIR (created on first use; full history, like the agent);
# 2. `git verify-commit FETCH_HEAD` against ALLOWED_SIGNERS (ssh-keygen -Y verify under the hood):
#    an unsigned or untrusted tip stops here, before anything is written under ROOT;
# 3. `git checkout` of the tree's files/ directory into ROOT/srv/bench (GIT_DIR's index makes it
#    incremental: only files that changed are rewritten; a sparse checkout keeps shoal.toml and
#    local.yml, which are not device files, out of ROOT).
#
# Not done, unlike shoal-agent: anti-rollback (an older signed commit is accepted), per-commit
# range verification, fsync of the written files, journaled all-or-nothing apply, generations.
set -euo pipefail
[ $# -eq 5 ] || { echo "usage: $0 URL REF ALLOWED_SIGNERS GIT_DIR ROOT" >&2; exit 2; }
url=$1 ref=$2 allowed_signers=$3 git_dir=$4 root=$5
umask 022 # files 0644, as the other tools write them

git_() { git --git-dir="$git_dir" --work-tree="$root/srv/bench" "$@"; }

if [ ! -d "$git_dir" ]; then
  git init -q --separate-git-dir="$git_dir" "$root/srv/bench"
  rm -f "$root/srv/bench/.git" # the gitlink file; GIT_DIR is always named explicitly
  git_ config core.sparseCheckout true
  mkdir -p "$git_dir/info"
  echo '/files/' >"$git_dir/info/sparse-checkout"
fi
git_ fetch --quiet --no-tags "$url" "$ref"
git_ -c gpg.ssh.allowedSignersFile="$allowed_signers" verify-commit FETCH_HEAD 2>/dev/null ||
  { echo "shell-sync: FETCH_HEAD is not signed by a key in $allowed_signers; not applied" >&2; exit 1; }
git_ checkout --quiet --force --detach FETCH_HEAD
