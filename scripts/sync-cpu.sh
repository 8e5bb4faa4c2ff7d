#!/usr/bin/env bash
# The CPU one first sync costs, for comparing agent builds (docs/CROSS.md, "Profile choices"):
#
#   scripts/sync-cpu.sh [-n RUNS] [--instructions] BINARY...
#
# Builds one signed repository (2,000 files over 101 commits, about 20 MB of pack, made with git
# and `ssh-keygen`), then for each BINARY, RUNS times (default 5), runs a first `shoal-agent sync`
# from it as a local path into a fresh device, and prints the median CPU time (user + sys of the
# agent and its children: qemu and the host's git-upload-pack) and the median wall time. An
# aarch64 or armv7 binary runs under qemu-aarch64-static / qemu-arm-static, so its seconds are
# inflated: compare the rows of one run, not the seconds. Runs alternate between binaries, so a
# change in the machine's load hits every binary alike. Everything is in a temp dir, removed.
#
# --instructions: instead of seconds, count the user-space instructions the agent executes in
# that first sync (all its threads; not the host's git-upload-pack, which is the same for every
# binary) with `valgrind --tool=callgrind`, whose total Ir does not depend on the machine's load.
# For host (x86_64) binaries only: build the candidate profiles for x86_64-unknown-linux-musl to
# compare them (docs/CROSS.md, "Size"). RUNS defaults to 1 there (the count is nearly exact).
set -euo pipefail
runs=
mode=time
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=$2; shift 2 ;;
    --instructions) mode=instructions; shift ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: scripts/sync-cpu.sh [-n RUNS] [--instructions] BINARY..." >&2; exit 2; }
if [ "$mode" = instructions ]; then
  runs=${runs:-1}
  command -v valgrind >/dev/null || { echo "sync-cpu: valgrind not found (Debian's valgrind)" >&2; exit 2; }
else
  runs=${runs:-5}
fi

work=$(mktemp -d -t shoal-sync-cpu.XXXXXX)
trap 'rm -rf "$work"' EXIT
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1

ssh-keygen -q -t ed25519 -N '' -C bench -f "$work/key"
printf 'bench@example namespaces="git" %s\n' "$(cut -d' ' -f1,2 "$work/key.pub")" >"$work/allowed_signers"
git init -q -b main "$work/repo"
git_c() { git -C "$work/repo" -c user.name=bench -c user.email=bench@example \
  -c gpg.format=ssh -c user.signingkey="$work/key" "$@"; }
python3 - "$work/repo" <<'EOF'
import os, random, sys
root = sys.argv[1]
random.seed(7)
os.makedirs(f"{root}/files", exist_ok=True)
with open(f"{root}/shoal.toml", "w") as f:
    f.write('version = 1\n\n[[profile]]\nname = "all"\nmatch = "*"\n')
    for i in range(2000):
        f.write(f'\n  [[profile.file]]\n  path = "/srv/bench/{i:04}.txt"\n  source = "files/{i:04}.txt"\n')
words = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(random.randint(2, 9))) for _ in range(5000)]
for i in range(2000):
    with open(f"{root}/files/{i:04}.txt", "w") as f:
        f.write(' '.join(random.choice(words) for _ in range(1500)) + '\n')
EOF
git_c add -A && git_c commit -q -S -m base
for c in $(seq 1 100); do
  python3 - "$work/repo" "$c" <<'EOF'
import random, sys
root, c = sys.argv[1], int(sys.argv[2])
random.seed(c)
for i in random.sample(range(2000), 20):
    with open(f"{root}/files/{i:04}.txt", "a") as f:
        f.write(f"change {c}: " + ''.join(random.choice('abcdefghijklmnopqrstuvwxyz ') for _ in range(2000)) + '\n')
EOF
  git_c commit -q -a -S -m "change $c"
done
git clone -q --bare --no-local "$work/repo" "$work/config.git"
# One pack, so the server side (the host's git-upload-pack, counted in the CPU too) only streams it.
git -C "$work/config.git" repack -adq
echo "repository: $(git -C "$work/config.git" count-objects -vH | sed -n 's/^size-pack: //p') of pack, $(git -C "$work/repo" rev-list --count HEAD) commits" >&2

runner() { # the emulator a binary needs, if any
  case "$(readelf -h "$1" | sed -n 's/^ *Machine: *//p')" in
    AArch64) echo qemu-aarch64-static ;;
    ARM) echo qemu-arm-static ;;
    *) ;;
  esac
}

for bin in "$@"; do
  if [ "$mode" = instructions ] && [ -n "$(runner "$bin")" ]; then
    echo "sync-cpu: --instructions counts host binaries only; $bin needs $(runner "$bin")" >&2
    exit 2
  fi
done

declare -A cpu=() wall=() instr=()
for run in $(seq 1 "$runs"); do
  for bin in "$@"; do
    dev="$work/device"
    rm -rf "$dev" && mkdir -p "$dev/root"
    cat >"$dev/agent.toml" <<EOF
device_id = "bench"
state_dir = "state"
root = "root"
[source]
url = "$work/config.git"
ref = "refs/heads/main"
[trust]
allowed_signers = "$work/allowed_signers"
verify = "range"
EOF
    if [ "$mode" = instructions ]; then
      out="$work/callgrind.out"
      rm -f "$out"
      valgrind --tool=callgrind --callgrind-out-file="$out" -q \
        "$bin" --config "$dev/agent.toml" sync >/dev/null 2>"$work/valgrind.err" ||
        { cat "$work/valgrind.err" >&2; echo "sync-cpu: sync failed under valgrind: $bin" >&2; exit 1; }
      instr[$bin]+="$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out") "
      continue
    fi
    # shellcheck disable=SC2046
    read -r c w < <(python3 - $(runner "$bin") "$bin" --config "$dev/agent.toml" sync <<'EOF'
import os, resource, subprocess, sys, time
start = time.monotonic()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
if code != 0:
    sys.exit(f"sync failed ({code}): {' '.join(sys.argv[1:])}")
print(f"{usage.ru_utime + usage.ru_stime:.3f} {wall:.3f}")
EOF
)
    cpu[$bin]+="$c "
    wall[$bin]+="$w "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
if [ "$mode" = instructions ]; then
  printf '| binary | bytes | instructions (Ir, median of %d) | lowest, highest | vs first |\n' "$runs"
  printf '| --- | ---: | ---: | ---: | ---: |\n'
  first=
  for bin in "$@"; do
    ir=$(median <<<"${instr[$bin]}")
    first=${first:-$ir}
    range=$(tr ' ' '\n' <<<"${instr[$bin]}" | grep -v '^$' | sort -n | sed -n '1p;$p' | paste -sd' ')
    awk -v b="$bin" -v s="$(stat -c %s "$bin")" -v ir="$ir" -v f="$first" -v r="$range" \
      'BEGIN { split(r, x, " "); printf "| %s | %s | %s | %s, %s | %+.2f%% |\n", b, s, ir, x[1], x[2], 100 * (ir - f) / f }'
  done
  exit 0
fi
printf '| binary | bytes | sync CPU s (median of %d) | wall s |\n| --- | ---: | ---: | ---: |\n' "$runs"
for bin in "$@"; do
  printf '| %s | %s | %s | %s |\n' "$bin" "$(stat -c %s "$bin")" \
    "$(median <<<"${cpu[$bin]}")" "$(median <<<"${wall[$bin]}")"
done
