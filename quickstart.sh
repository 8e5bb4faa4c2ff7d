#!/usr/bin/env bash
# Shoal quickstart: builds the agent, makes a signing key and a signed example config repo,
# and has an agent sync it into a sandbox under .quickstart/ — all local, no root needed.
# Run it again to see a no-op sync; it starts fresh if you delete .quickstart/.
set -euo pipefail
cd "$(dirname "$0")"
Q="$PWD/.quickstart"
mkdir -p "$Q"
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building shoal-agent"
cargo build --quiet -p shoal-agent
AGENT="$PWD/target/debug/shoal-agent"

if [ ! -f "$Q/keys/operator" ]; then
  say "creating the operator's signing key (ssh-keygen, ed25519)"
  mkdir -p "$Q/keys"
  ssh-keygen -q -t ed25519 -N '' -C operator@example -f "$Q/keys/operator"
fi
printf 'operator@example namespaces="git" %s\n' "$(cut -d' ' -f1,2 "$Q/keys/operator.pub")" > "$Q/allowed_signers"

if [ ! -d "$Q/config-repo" ]; then
  say "creating a signed example config repo (git commit -S with gpg.format=ssh)"
  cp -r examples/config-repo "$Q/config-repo"
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
  -c gpg.format=ssh -c user.signingkey="$Q/keys/operator.pub" commit -q -S -am "Announce maintenance"
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

say "what ran for real, and what is not built yet"
cat <<TXT
ran for real: ssh-keygen key, git-signed commits, gix fetch into the agent's mirror,
              SSHSIG verification against allowed_signers, anti-rollback, render,
              journaled atomic apply into the sandbox root $Q/root, generations,
              rollback/resume.
not yet:      systemd services (needs root and a systemd, open issue), reports to the
              collector and the fleet status API (open issue); nothing here needs root.
TXT
