#!/usr/bin/env bash
# Side by side, in one run on one machine: shoal-agent vs ansible-pull vs a plain shell baseline
# (git fetch + git verify-commit + git checkout), plus the agent's binary sizes and idle RSS.
#
#   bench/compare.sh [--quick] [--rounds N] [--ansible-rounds N] [--ansible-1000] [--no-ansible]
#                    [--ansible-venv DIR] [--no-cross] [--idle-wait S] [--keep]
#
# Prints progress to stderr and one markdown table (with its notes) to stdout. Needs cargo, rustc,
# git (with `git daemon`), ssh-keygen and python3; no root. The only network it uses is PyPI, for
# ansible-core (and whatever scripts/cross-build.sh installs); without it the ansible-pull
# column says "not measured" and the rest still runs. Everything it makes lives in a temp dir
# (under $TMPDIR) that it removes at the end (kept with --keep).
#
# What is measured (see bench/README.md for the why):
# - binary size of the static agent per device target, from scripts/cross-build.sh (run per target;
#   --no-cross uses the binaries already in target/cross), and of the host release build;
# - idle RSS of `shoal-agent run` once its first sync has been recorded (VmRSS of the daemon,
#   --idle-wait seconds after state_dir/last-result.json appears and `status --json` says the
#   commit is applied);
# - wall time, CPU and peak RSS of the three tools converging a 100-file and a 1,000-file signed
#   repo, (a) from scratch and (b) after a one-file change. All three pull the same bare repo over
#   git:// from a local `git daemon` on 127.0.0.1, verify the tip's SSH signature before writing,
#   and write the files to the same paths under their own sandbox root. Medians of N rounds, the
#   tools' order rotating every round so the machine's noise hits all of them.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$0")/.."
REPO_ROOT=$PWD
CMDLINE="bench/compare.sh${*:+ $*}"

# ---- options ---------------------------------------------------------------------------------
ROUNDS=3          # rounds of every sync case (median reported)
ANSIBLE_ROUNDS=1  # ansible-pull takes ~1 min per 100 files per run here: one round by default
ANSIBLE_1000=0    # the 1,000-file ansible-pull runs take ~10 min each: opt in
NO_ANSIBLE=0
ANSIBLE_VENV=""   # an existing venv with ansible-core, instead of installing one
NO_CROSS=0
IDLE_WAIT=12      # seconds: tokio's blocking-pool thread that ran the sync exits after 10 s idle
KEEP=0
SIZES=(100 1000)

usage() { sed -n '2,12p' "$SELF" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) ROUNDS=1; ANSIBLE_ROUNDS=1 ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --ansible-rounds) ANSIBLE_ROUNDS=${2:?}; shift ;;
    --ansible-1000) ANSIBLE_1000=1 ;;
    --no-ansible) NO_ANSIBLE=1 ;;
    --ansible-venv) ANSIBLE_VENV=$(realpath "${2:?}"); shift ;;
    --no-cross) NO_CROSS=1 ;;
    --idle-wait) IDLE_WAIT=${2:?}; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) usage 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; usage ;;
  esac
  shift
done
[ "$ANSIBLE_ROUNDS" -le "$ROUNDS" ] || ANSIBLE_ROUNDS=$ROUNDS

say() { printf '\n== %s\n' "$*" >&2; }
info() { printf '%s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

for tool in cargo rustc git ssh-keygen python3; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

# ---- work dir, cleanup -------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shoal-bench.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
PIDS=() # background processes this script started (git daemon, agent daemons)
forget_pid() { # PID: it has been reaped; never signal whatever reuses the number
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
cleanup() {
  local pid
  set +e # a killed process's status (143) must not end the cleanup early
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  if [ "$KEEP" -eq 1 ]; then info "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
info "work dir $WORK"

# Every git here, ansible's included, ignores the user's and the system's git configuration.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
META=$WORK/meta       # key=value lines for bench/table.py
RESULTS=$WORK/results # one line per timed run
: >"$META"
: >"$RESULTS"
meta() { printf '%s=%s\n' "$1" "$2" >>"$META"; }
meta cmdline "$CMDLINE"

# ---- builds ------------------------------------------------------------------------------------
say "cargo build --release -p shoal-agent"
cargo build --release -p shoal-agent 2>"$LOGS/build.log" || { tail -20 "$LOGS/build.log" >&2; die "release build failed"; }
AGENT=$REPO_ROOT/target/release/shoal-agent
HOST_TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
meta host_triple "$HOST_TRIPLE"
meta host_bytes "$(stat -c %s "$AGENT")"
meta commit "$(git -C "$REPO_ROOT" describe --always --dirty --abbrev=7 2>/dev/null || echo unknown)"
meta agent_dirty "$(git -C "$REPO_ROOT" status --porcelain -- agent Cargo.toml Cargo.lock 2>/dev/null | wc -l)"

CROSS_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf x86_64-unknown-linux-musl)
CROSS_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target/cross}
for t in "${CROSS_TARGETS[@]}"; do
  bin=$CROSS_DIR/$t/release/shoal-agent
  if [ "$NO_CROSS" -eq 1 ]; then
    if [ -f "$bin" ]; then
      meta "size_$t" "$(stat -c %s "$bin")"
      meta "size_note_$t" "existing build of $(date -u -r "$bin" '+%Y-%m-%d %H:%M UTC') (--no-cross)"
    else
      meta "size_$t" "not built: --no-cross and no binary at ${bin#"$REPO_ROOT"/}"
    fi
    continue
  fi
  say "scripts/cross-build.sh $t"
  stamp=$WORK/stamp-$t
  touch "$stamp"
  start=$SECONDS
  if scripts/cross-build.sh "$t" >"$LOGS/cross-$t.log" 2>&1; then
    meta "size_$t" "$(stat -c %s "$bin")"
    meta "size_note_$t" "built in this run ($((SECONDS - start)) s)"
  elif [ -f "$bin" ] && [ "$bin" -nt "$stamp" ]; then
    # Built, but the script refused it (over budget or not static): still a real size.
    meta "size_$t" "$(stat -c %s "$bin")"
    meta "size_note_$t" "built in this run; cross-build.sh failed: $(grep -m1 'cross-build:' "$LOGS/cross-$t.log" || tail -1 "$LOGS/cross-$t.log")"
  else
    why=$(grep -E '^(cross-build:|error)' "$LOGS/cross-$t.log" | tail -1)
    meta "size_$t" "not built: ${why:-$(tail -1 "$LOGS/cross-$t.log")}"
    tail -5 "$LOGS/cross-$t.log" >&2
  fi
done

# The device build for this machine's architecture, measured next to the host build for the RSS
# figures (musl's allocator is not glibc's, and the RSS budgets are about devices).
case "$(uname -m)" in
  x86_64) MUSL_TARGET=x86_64-unknown-linux-musl ;;
  aarch64) MUSL_TARGET=aarch64-unknown-linux-musl ;;
  armv7l) MUSL_TARGET=armv7-unknown-linux-musleabihf ;;
  *) MUSL_TARGET="" ;;
esac
MUSL_AGENT=""
if [ -n "$MUSL_TARGET" ] && grep -qE "^size_$MUSL_TARGET=[0-9]+$" "$META"; then
  MUSL_AGENT=$CROSS_DIR/$MUSL_TARGET/release/shoal-agent
  meta musl_target "$MUSL_TARGET"
fi

say "measuring helper (bench/measure.rs, std only)"
MEASURE=$WORK/measure
rustc -O --edition 2021 -o "$MEASURE" bench/measure.rs
"$MEASURE" "$WORK/floor" -- true
meta floor_kib "$(cut -d' ' -f3 "$WORK/floor")"

# ---- ansible-core ------------------------------------------------------------------------------
ANSIBLE_WHY=""
if [ "$NO_ANSIBLE" -eq 1 ]; then
  ANSIBLE_WHY="not measured: --no-ansible"
elif [ -n "$ANSIBLE_VENV" ]; then
  [ -x "$ANSIBLE_VENV/bin/ansible-pull" ] || ANSIBLE_WHY="not measured: no ansible-pull in $ANSIBLE_VENV"
else
  say "python3 -m venv + pip install ansible-core (PyPI)"
  ANSIBLE_VENV=$WORK/venv
  if ! python3 -m venv "$ANSIBLE_VENV" >"$LOGS/venv.log" 2>&1; then
    ANSIBLE_WHY="not measured: python3 -m venv failed ($(tail -1 "$LOGS/venv.log"))"
  elif ! PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 600 "$ANSIBLE_VENV/bin/pip" install --quiet ansible-core >"$LOGS/pip.log" 2>&1; then
    ANSIBLE_WHY="not measured: pip install ansible-core failed ($(grep -m1 -iE 'error|could not' "$LOGS/pip.log" || tail -1 "$LOGS/pip.log"))"
  fi
fi
if [ -z "$ANSIBLE_WHY" ]; then
  meta ansible_version "$("$ANSIBLE_VENV/bin/ansible-pull" --version 2>/dev/null | sed -n 1p || true)"
  meta ansible_rounds "$ANSIBLE_ROUNDS"
  [ "$ANSIBLE_1000" -eq 1 ] || meta ansible_skip_1000 "not measured: ~10 min per run at 1,000 files (two module runs per file); --ansible-1000 measures it"
else
  meta ansible_why "$ANSIBLE_WHY"
  info "$ANSIBLE_WHY"
fi

# ---- signing key, repos, git daemon ------------------------------------------------------------
say "signed config repos: ${SIZES[*]} files, a base commit and a one-file change"
ssh-keygen -q -t ed25519 -N '' -C bench@example -f "$WORK/operator"
ALLOWED=$WORK/allowed_signers
printf 'bench@example namespaces="git" %s\n' "$(cut -d' ' -f1,2 "$WORK/operator.pub")" >"$ALLOWED"
git_signed() {
  git -c user.name=Bench -c user.email=bench@example -c gpg.format=ssh \
    -c user.signingkey="$WORK/operator.pub" "$@"
}
declare -A BASE CHANGE
for n in "${SIZES[@]}"; do
  src=$WORK/src$n bare=$WORK/srv/cfg$n.git
  python3 bench/gen_repo.py "$src" "$n" "$(id -u)" "$(id -g)"
  cp bench/ansible/local.yml "$src/local.yml"
  git init -q -b main "$src"
  git -C "$src" add -A
  git_signed -C "$src" commit -q -S -m "bench: $n files"
  BASE[$n]=$(git -C "$src" rev-parse HEAD)
  python3 bench/gen_repo.py "$src" "$n" "$(id -u)" "$(id -g)" --change
  git_signed -C "$src" commit -q -S -am "bench: change one file"
  CHANGE[$n]=$(git -C "$src" rev-parse HEAD)
  git init -q --bare "$bare"
  # The change commit waits under a hidden ref, so no tool can see or prefetch it before its turn.
  git -C "$src" push -q "$bare" "${BASE[$n]}:refs/heads/main" "${CHANGE[$n]}:refs/hidden/next"
  git -C "$bare" config uploadpack.hideRefs refs/hidden
done

say "git daemon on 127.0.0.1 (git://, the same transport for all three tools)"
for _ in 1 2 3; do
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  git daemon --reuseaddr --listen=127.0.0.1 --port="$PORT" --base-path="$WORK/srv" --export-all \
    "$WORK/srv" 2>>"$LOGS/git-daemon.log" &
  PIDS+=($!)
  for _ in $(seq 50); do
    git ls-remote "git://127.0.0.1:$PORT/cfg100.git" >/dev/null 2>&1 && break 2
    sleep 0.1
  done
  kill -TERM "${PIDS[-1]}" 2>/dev/null || true
  wait "${PIDS[-1]}" 2>/dev/null || true
  forget_pid "${PIDS[-1]}"
done
git ls-remote "git://127.0.0.1:$PORT/cfg100.git" >/dev/null || die "git daemon did not start ($(tail -1 "$LOGS/git-daemon.log"))"
url() { echo "git://127.0.0.1:$PORT/cfg$1.git"; }
move_main() { git -C "$WORK/srv/cfg$1.git" update-ref refs/heads/main "$2"; }

# ---- one sync run per tool ---------------------------------------------------------------------
agent_config() { # DIR N: a fresh device for shoal-agent
  mkdir -p "$1/root"
  cat >"$1/agent.toml" <<TOML
device_id = "bench-0001"
state_dir = "state"
root      = "root"

[source]
url      = "$(url "$2")"
ref      = "refs/heads/main"
interval = "3600s"

[trust]
allowed_signers = "$ALLOWED"
verify = "range"
TOML
}

# Runs one converge of TOOL for repo size N into DIR (made fresh by the caller for "scratch").
sync_cmd() { # TOOL N DIR -> the command line in the array CMD
  local tool=$1 n=$2 dir=$3
  case "$tool" in
    shoal) CMD=("$AGENT" --config "$dir/agent.toml" sync) ;;
    shoal-musl) CMD=("$MUSL_AGENT" --config "$dir/agent.toml" sync) ;;
    shell) CMD=("$REPO_ROOT/bench/shell-sync.sh" "$(url "$n")" refs/heads/main "$ALLOWED" "$dir/git" "$dir/root") ;;
    ansible)
      # ansible-pull's --verify-commit runs `git verify-commit`; git learns where the allowed
      # signers are from the environment (GIT_CONFIG_*), as it would from /etc/gitconfig.
      CMD=(env "PATH=$ANSIBLE_VENV/bin:$PATH" "ANSIBLE_HOME=$WORK/ansible-home"
        "ANSIBLE_LOCAL_TEMP=$WORK/ansible-home/tmp" "ANSIBLE_REMOTE_TMP=$WORK/ansible-home/tmp"
        ANSIBLE_LOCALHOST_WARNING=False ANSIBLE_HOST_PATTERN_MISMATCH=ignore ANSIBLE_NOCOLOR=1
        ANSIBLE_PIPELINING=True ANSIBLE_RETRY_FILES_ENABLED=False
        "ANSIBLE_PYTHON_INTERPRETER=$ANSIBLE_VENV/bin/python"
        GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=gpg.ssh.allowedSignersFile "GIT_CONFIG_VALUE_0=$ALLOWED"
        "$ANSIBLE_VENV/bin/ansible-pull" -U "$(url "$n")" -C main -d "$dir/checkout" --verify-commit
        -i "localhost," -e "root=$dir/root" local.yml)
      ;;
  esac
}

fresh_device() { # TOOL N DIR
  rm -rf "$3"
  mkdir -p "$3/root"
  case "$1" in shoal | shoal-musl) agent_config "$3" "$2" ;; esac
}

# Does DIR/root hold exactly COMMIT's files/, each 0644? Prints what is wrong, if anything.
check_tree() { # DIR N COMMIT
  local root=$1/root/srv/bench want got
  [ -d "$root/files" ] || { echo "no $root/files"; return; }
  want=$(git -C "$WORK/srv/cfg$2.git" ls-tree -r "$3" -- files | awk -F'\t' '{ split($1, m, " "); print $2, m[3] }')
  got=$(cd "$root" && find files -type f | LC_ALL=C sort >"$WORK/paths" &&
    paste -d' ' "$WORK/paths" <(git hash-object --stdin-paths <"$WORK/paths"))
  [ "$(LC_ALL=C sort <<<"$want")" = "$got" ] || { echo "files differ from commit ${3:0:7}"; return; }
  [ -z "$(cd "$root" && find files -type f ! -perm 0644 | head -1)" ] || echo "a file is not 0644"
}

# One timed converge; appends "tool n case round wall cpu rss exit check" to RESULTS.
timed() { # TOOL N CASE ROUND DIR COMMIT
  local tool=$1 n=$2 case=$3 round=$4 dir=$5 commit=$6 log wall cpu rss code problem
  log=$LOGS/$tool-$n-$case-$round.log
  sync_cmd "$tool" "$n" "$dir"
  rm -f "$WORK/m"
  sync # flush the setup's dirty pages now, not inside the timing
  "$MEASURE" "$WORK/m" -- "${CMD[@]}" >"$log" 2>&1 || true
  [ -s "$WORK/m" ] || echo "0 0 0 127" >"$WORK/m" # the helper could not start the command
  read -r wall cpu rss code <"$WORK/m"
  problem=$(check_tree "$dir" "$n" "$commit")
  if [ "$code" != 0 ] || [ -n "$problem" ]; then
    info "  $tool $n $case round $round: FAILED (exit $code) ${problem}; last lines of $log:"
    tail -5 "$log" | sed 's/^/    /' >&2
  fi
  printf '%s %s %s %s %s %s %s %s %s\n' "$tool" "$n" "$case" "$round" "$wall" "$cpu" "$rss" "$code" \
    "$([ -z "$problem" ] && echo ok || echo wrong)" >>"$RESULTS"
  info "  $(printf '%-10s %4s files %-7s round %s: %8.3f s wall %7.3f s cpu %7.1f MiB peak RSS  exit %s%s' \
    "$tool" "$n" "$case" "$round" "$wall" "$cpu" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$code" \
    "${problem:+  WRONG: $problem}")"
}

TOOLS=(shoal shell)
[ -z "$MUSL_AGENT" ] || TOOLS+=(shoal-musl)
[ -n "$ANSIBLE_WHY" ] || TOOLS+=(ansible)
meta rounds "$ROUNDS"
meta tools "${TOOLS[*]}"
meta fs "$(findmnt -no FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")"
meta nproc "$(nproc)"
meta cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
meta kernel "$(uname -sr)"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta git_version "$(git --version)"
meta rustc_version "$(rustc --version)"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta user "$(id -un)"

say "converge runs: ${TOOLS[*]}; $ROUNDS round(s) (ansible-pull: $ANSIBLE_ROUNDS)"
for n in "${SIZES[@]}"; do
  for round in $(seq "$ROUNDS"); do
    # Rotate the tools' order every round.
    k=$(((round - 1) % ${#TOOLS[@]}))
    order=("${TOOLS[@]:k}" "${TOOLS[@]:0:k}")
    for tool in "${order[@]}"; do
      if [ "$tool" = ansible ]; then
        [ "$round" -le "$ANSIBLE_ROUNDS" ] || continue
        [ "$n" -lt 1000 ] || [ "$ANSIBLE_1000" -eq 1 ] || continue
      fi
      dir=$WORK/run/$tool-$n
      move_main "$n" "${BASE[$n]}"
      fresh_device "$tool" "$n" "$dir"
      timed "$tool" "$n" scratch "$round" "$dir" "${BASE[$n]}"
      move_main "$n" "${CHANGE[$n]}"
      timed "$tool" "$n" change "$round" "$dir" "${CHANGE[$n]}"
    done
  done
  rm -rf "$WORK/run"
done

# ---- idle RSS of the daemon --------------------------------------------------------------------
say "idle RSS: shoal-agent run, ${IDLE_WAIT}s after its first sync was recorded"
idle_rss() { # LABEL BIN N
  local label=$1 bin=$2 n=$3 dir=$WORK/idle pid rss anon threads status
  fresh_device shoal "$n" "$dir"
  move_main "$n" "${BASE[$n]}"
  "$bin" --config "$dir/agent.toml" run >"$LOGS/idle-$label-$n.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 600); do
    [ -f "$dir/state/last-result.json" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  sleep "$IDLE_WAIT"
  if ! kill -0 "$pid" 2>/dev/null; then
    meta "idle_${label}_$n" "failed: the daemon exited ($(tail -1 "$LOGS/idle-$label-$n.log"))"
    return
  fi
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
  anon=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status")
  threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
  # Taken after the sample: `status` locks the state dir, which an idle daemon does not hold.
  status=$("$bin" --config "$dir/agent.toml" status --json 2>/dev/null |
    python3 -c 'import json, sys; s = json.load(sys.stdin); print((s.get("last_result") or {}).get("status"), s.get("applied_commit"))' ||
    true)
  kill -TERM "$pid"
  wait "$pid" || true
  forget_pid "$pid"
  if [ "$status" = "converged ${BASE[$n]}" ] && [ -z "$(check_tree "$dir" "$n" "${BASE[$n]}")" ]; then
    meta "idle_${label}_$n" "$rss $anon $threads"
  else
    meta "idle_${label}_$n" "failed: status after the first sync was '$status'"
  fi
  info "  $label $n files: VmRSS $rss KiB (RssAnon $anon KiB, $threads threads), status: $status"
  rm -rf "$dir"
}
for n in "${SIZES[@]}"; do
  idle_rss host "$AGENT" "$n"
  [ -z "$MUSL_AGENT" ] || idle_rss musl "$MUSL_AGENT" "$n"
done
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

say "table"
python3 bench/table.py "$META" "$RESULTS"
