#!/bin/sh
# The worked example of docs/TRUST.md ("Policy in the repository"), built with stock git and
# ssh-keygen into DIR (tests/tests/policy.rs runs it, so it cannot rot):
#   DIR/keys/              ed25519 keys of alice, bob, carol, sensor-lead, and carol's new key
#   DIR/allowed_signers    the devices' bootstrap root: alice, bob, carol (with root_threshold = 2)
#   DIR/repo               the configuration repository, four commits:
#     1. alice adds .shoal/policy.toml; bob approves (the bootstrap root needs 2 of 3)
#     2. sensor-lead changes files/sensor/sensor.conf (her rule: no approval needed)
#     3. alice and bob rotate carol's key (a policy change: the root before it, 2 of 3)
#     4. carol, with her new key, changes files/motd; alice approves (root path: 2 of 3)
# Usage: make.sh DIR
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$1
mkdir -p "$dir/keys"
for who in alice bob carol carol-new sensor-lead; do
    ssh-keygen -q -t ed25519 -N '' -C "$who" -f "$dir/keys/$who"
done
for who in alice bob carol; do
    echo "$who namespaces=\"git\" $(cut -d' ' -f1,2 "$dir/keys/$who.pub")"
done > "$dir/allowed_signers"

repo=$dir/repo
git init -q "$repo"
git -C "$repo" config user.name "Shoal Example"
git -C "$repo" config user.email "example@shoal.invalid"
git -C "$repo" config gpg.format ssh

# policy CAROL_KEY: the policy with carol's key being CAROL_KEY (carol or carol-new).
policy() {
    mkdir -p "$repo/.shoal"
    cp "$here/policy.toml.in" "$repo/.shoal/policy.toml"
    for who in alice bob sensor-lead; do
        sed -i "s|@$who@|$(cut -d' ' -f1,2 "$dir/keys/$who.pub")|" "$repo/.shoal/policy.toml"
    done
    sed -i "s|@carol@|$(cut -d' ' -f1,2 "$dir/keys/$1.pub")|" "$repo/.shoal/policy.toml"
}
# commit KEY MESSAGE: commits the whole tree signed with KEY; prints nothing.
commit() {
    git -C "$repo" add -A
    git -C "$repo" -c user.signingkey="$dir/keys/$1" commit -q -S -m "$2"
}
# approve KEY PRINCIPAL: PRINCIPAL approves HEAD with KEY (what `shoal-agent approve` does).
approve() {
    head=$(git -C "$repo" rev-parse HEAD)
    git -C "$repo" -c user.signingkey="$dir/keys/$1" tag -s -m "Approve $head" \
        "shoal-approve/$head/$2" "$head"
}

cp "$here/shoal.toml" "$repo/shoal.toml"
mkdir -p "$repo/files/sensor"
cp "$here/files/motd" "$repo/files/motd"
cp "$here/files/sensor/sensor.conf" "$repo/files/sensor/sensor.conf"
policy carol
commit alice "the first policy: root 2 of alice, bob, carol; the sensor team's rule"
approve bob bob

echo "interval = 5" > "$repo/files/sensor/sensor.conf"
commit sensor-lead "sensors: sample every 5 s"

policy carol-new
commit alice "rotate carol's key (the old one leaked)"
approve bob bob

echo "Managed by Shoal. Maintenance on Sunday." > "$repo/files/motd"
commit carol-new "motd: maintenance window"
approve alice alice
