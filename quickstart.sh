#!/usr/bin/env bash
# Shoal quickstart: builds the agent, makes a signing key and a signed example config repo,
# and has an agent sync it into a sandbox under .quickstart/ — all local, no root needed.
# Run it again to see a no-op sync; it starts fresh if you delete .quickstart/.
# In a terminal it keeps the collector (and its fleet page) running at the end until Ctrl-C;
# `--no-serve` (and any run without a terminal, as in CI) stops it and exits.
set -euo pipefail
SERVE=1
for arg in "$@"; do
  case "$arg" in
    --no-serve) SERVE=0 ;;
    *) echo "usage: $0 [--no-serve]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")"
Q="$PWD/.quickstart"
mkdir -p "$Q"
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building shoal-agent and shoal-collector"
cargo build --quiet -p shoal-agent -p shoal-collector
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
AGENT="$TARGET/debug/shoal-agent"
COLLECTOR="$TARGET/debug/shoal-collector"

say "starting a local collector (embedded sled store in .quickstart/collector)"
[ -f "$Q/enroll-token" ] || head -c 24 /dev/urandom | base64 > "$Q/enroll-token"
"$COLLECTOR" serve --listen 127.0.0.1:0 --data "$Q/collector" --enroll-token-file "$Q/enroll-token" \
  > "$Q/collector.out" 2> "$Q/collector.log" &
COLLECTOR_PID=$!
trap 'kill -TERM $COLLECTOR_PID 2>/dev/null; wait $COLLECTOR_PID 2>/dev/null' EXIT
for _ in $(seq 100); do [ -s "$Q/collector.out" ] && break; sleep 0.1; done
URL="$(sed -n 's/^listening on //p' "$Q/collector.out")"
[ -n "$URL" ] || { cat "$Q/collector.log"; exit 1; }
echo "collector at $URL"

if [ ! -f "$Q/keys/operator" ]; then
  say "creating the operator's signing key (ssh-keygen, ed25519)"
  mkdir -p "$Q/keys"
  ssh-keygen -q -t ed25519 -N '' -C operator@example -f "$Q/keys/operator"
fi
printf 'operator@example namespaces="git" %s\n' "$(cut -d' ' -f1,2 "$Q/keys/operator.pub")" > "$Q/allowed_signers"

if [ ! -d "$Q/config-repo" ]; then
  say "creating a signed example config repo (git commit -S with gpg.format=ssh)"
  cp -r examples/config-repo "$Q/config-repo"
  if [ "$(id -u)" -ne 0 ]; then
    # Declared files default to root:root, and only root can chown. Not root here, so the
    # sandbox's files are declared as yours (on a device the agent runs as root).
    echo "not root: the example's files are declared owner $(id -u), group $(id -g) instead of root"
    sed -i "s|^  source   = \(.*\)$|  source   = \1\n  owner    = \"$(id -u)\"\n  group    = \"$(id -g)\"|" \
      "$Q/config-repo/shoal.toml"
  fi
  git -C "$Q/config-repo" init -q -b production
  git -C "$Q/config-repo" add -A
  git -C "$Q/config-repo" -c user.name=Operator -c user.email=operator@example \
    -c gpg.format=ssh -c user.signingkey="$Q/keys/operator.pub" commit -q -S -m "Initial fleet config"
fi

cat > "$Q/agent.toml" <<TOML
device_id = "gw-0001"
labels    = { role = "gateway", site = "quickstart" }
state_dir = "state"
root      = "root"

[source]
url      = "config-repo"
ref      = "refs/heads/production"
interval = "60s"

[trust]
allowed_signers = "allowed_signers"
verify = "range"

[collector]
url = "$URL"
enroll_token_file = "enroll-token"
TOML

say "verifying the repo's tip as the config repo's CI would: shoal-agent verify"
"$AGENT" verify "$Q/config-repo" --allowed-signers "$Q/allowed_signers"

mkdir -p "$Q/root"

say "what this device would get (shoal-agent render, as a PR reviewer would run it)"
"$AGENT" render "$Q/config-repo" --device-id gw-0001 --label role=gateway --label site=quickstart

say "syncing the device: fetch + verify signatures + anti-rollback + render + journaled apply"
"$AGENT" --config "$Q/agent.toml" sync
echo "--- $Q/root/etc/motd:"; cat "$Q/root/etc/motd"

say "syncing again: nothing new, one ref advertisement, no download, no disk writes"
"$AGENT" --config "$Q/agent.toml" sync

say "a new signed commit, then sync"
echo "Maintenance window: Sundays 02:00 UTC on {{ device.id }}." > "$Q/config-repo/files/motd"
git -C "$Q/config-repo" -c user.name=Operator -c user.email=operator@example \
  -c gpg.format=ssh -c user.signingkey="$Q/keys/operator.pub" commit -q -S --allow-empty -am "Announce maintenance"
"$AGENT" --config "$Q/agent.toml" sync
echo "--- $Q/root/etc/motd:"; cat "$Q/root/etc/motd"

say "on-device rollback (works offline), then resume"
"$AGENT" --config "$Q/agent.toml" rollback
echo "--- $Q/root/etc/motd:"; cat "$Q/root/etc/motd"
"$AGENT" --config "$Q/agent.toml" resume
"$AGENT" --config "$Q/agent.toml" sync
"$AGENT" --config "$Q/agent.toml" history

say "device status"
"$AGENT" --config "$Q/agent.toml" status --json

say "fleet status from the collector's API"
get() { if command -v curl >/dev/null; then curl -sS "$URL$1"; else python3 -c "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1]).read().decode())" "$URL$1"; fi; echo; }
echo "GET /api/v1/summary"; get /api/v1/summary
echo "GET /api/v1/devices"; get /api/v1/devices
echo "(the collector also serves a fleet page at $URL/)"

say "what ran for real, and what this machine did not"
cat <<TXT
ran for real: ssh-keygen key, git-signed commits, gix fetch into the agent's mirror,
              SSHSIG verification against allowed_signers, anti-rollback, render,
              journaled atomic apply into the sandbox root $Q/root, generations,
              rollback/resume,
              signed reports to a real collector (enrolled with a token) and its API.
not here:     systemd services and the agent as a service, a network between devices
              (they need root and a systemd as PID 1; nothing in this quickstart needs root).
              As root, "SHOAL_E2E=1 cargo test -p shoal-e2e --test fleet" boots three devices,
              each a real systemd on its own veth link, and runs fourteen rollout scenarios;
              docs/FLEET.md does the same on real hosts.
TXT

if [ "$SERVE" = 1 ] && [ -t 0 ] && [ -t 1 ]; then
  say "the collector keeps running: open the fleet page"
  echo "fleet page: $URL/   API: $URL/api/v1/summary"
  echo "(started without --token-file, so reading needs no token; a device enrolls with the"
  echo " token in $Q/enroll-token)"
  echo "Ctrl-C stops the collector. Run with --no-serve to stop at once."
  trap 'echo; echo "stopping the collector"; exit 0' INT
  wait "$COLLECTOR_PID" || true
fi
