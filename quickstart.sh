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

say "syncing the device: fetch + verify signatures + anti-rollback"
"$AGENT" --config "$Q/agent.toml" sync

say "syncing again: nothing new, one ref advertisement, no download"
"$AGENT" --config "$Q/agent.toml" sync

say "device status"
"$AGENT" --config "$Q/agent.toml" status --json

say "what ran for real, and what is not built yet"
cat <<TXT
ran for real: ssh-keygen key, git-signed commit, gix fetch into the agent's mirror,
              SSHSIG verification against allowed_signers, anti-rollback watermark.
not yet:      rendering/applying files into the sandbox root, systemd services, the
              collector and fleet status (see the project's open issues).
TXT
