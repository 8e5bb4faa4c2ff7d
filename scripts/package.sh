#!/usr/bin/env bash
# Debian packages and a release tarball for one architecture, from binaries already built:
#
#   scripts/package.sh ARCH AGENT_BIN [COLLECTOR_BIN]
#
# ARCH is a Debian architecture: amd64, arm64 or armhf (x86_64-, aarch64- and
# armv7-unknown-linux-musl*). Writes into $OUT (default target/dist):
#   shoal-agent_$VERSION_$ARCH.deb       the agent, its unit, /etc/shoal/agent.toml.example,
#                                        /var/lib/shoal, man pages, bash/zsh/fish completions
#   shoal-collector_$VERSION_$ARCH.deb   (with COLLECTOR_BIN) the collector, its hardened unit,
#                                        its system user (sysusers.d) and state directory
#   shoal-$UPSTREAM-$TRIPLE.tar.gz       the same files for hosts without dpkg
#   SHA256SUMS                           of every .deb and .tar.gz in $OUT, rewritten each run
# DEB_COMPRESSION (xz) is dpkg-deb's -Z: the tests use "none" for unstripped debug binaries.
# VERSION defaults to the workspace version + "-1" (Debian revision); a newer revision with the
# same binaries is an upgrade as far as dpkg is concerned (the packages test relies on it).
# Man pages and completions come from the agent's clap definition (`shoal-dist`, built here
# unless $SHOAL_DIST_DOCS names a directory it already wrote); they are the same for every ARCH.
#
# Why dpkg-deb and not cargo-deb: dpkg-deb is Debian's own tool and is on every Debian machine,
# so CI packages the binaries it already built in seconds (cargo-deb is compiled from crates.io
# first, and wants to drive `cargo build` itself); maintainer scripts and conffiles are spelled
# out below instead of generated, so what the package does is all in this repository
# (packaging/debian/). `lintian` is run on the result when it is installed (see docs/PACKAGING.md
# for the tags left and why).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

die() { printf 'package: %s\n' "$*" >&2; exit 2; }
[ $# -ge 2 ] || die "usage: scripts/package.sh ARCH AGENT_BIN [COLLECTOR_BIN]"
ARCH=$1
AGENT_BIN=$(realpath "$2")
COLLECTOR_BIN=${3:+$(realpath "$3")}
case "$ARCH" in
  amd64) TRIPLE=x86_64-unknown-linux-musl ;;
  arm64) TRIPLE=aarch64-unknown-linux-musl ;;
  armhf) TRIPLE=armv7-unknown-linux-musleabihf ;;
  *) die "$ARCH: not amd64, arm64 or armhf" ;;
esac
[ -x "$AGENT_BIN" ] || die "no agent binary at $AGENT_BIN"
[ -z "$COLLECTOR_BIN" ] || [ -x "$COLLECTOR_BIN" ] || die "no collector binary at $COLLECTOR_BIN"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian's dpkg package)"

UPSTREAM=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
VERSION=${VERSION:-$UPSTREAM-1}
OUT=$(realpath -m "${OUT:-target/dist}")
MAINTAINER=${MAINTAINER:-"Shoal maintainers <shoal@example.com>"}
# Reproducible: every file's mtime, and the changelog date, from the last commit.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
mkdir -p "$OUT"
WORK=$(mktemp -d -t shoal-package.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

DOCS=${SHOAL_DIST_DOCS:-}
if [ -z "$DOCS" ]; then
  cargo build --quiet -p shoal-dist
  DOCS="$WORK/docs"
  "${CARGO_TARGET_DIR:-$ROOT/target}/debug/shoal-dist" "$DOCS"
fi
[ -f "$DOCS/man/shoal-agent.1" ] || die "no man pages in $DOCS/man (run shoal-dist DIR)"

# changelog.Debian.gz and copyright, the two files every package's doc directory must have.
doc_files() { # doc_files PACKAGE DEST
  local dest=$2/usr/share/doc/$1
  install -d "$dest"
  {
    printf '%s (%s) unstable; urgency=medium\n\n' "$1" "$VERSION"
    printf '  * Built from the Shoal repository (scripts/package.sh).\n\n'
    printf ' -- %s  %s\n' "$MAINTAINER" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
  } | gzip -9n >"$dest/changelog.Debian.gz"
  cat >"$dest/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: shoal
Source: https://github.com/shoal/shoal

Files: *
Copyright: 2026 Shoal contributors
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be found in
 /usr/share/common-licenses/Apache-2.0.
EOF
  chmod 0644 "$dest/copyright" "$dest/changelog.Debian.gz"
}

# control, md5sums, conffiles and maintainer scripts, then dpkg-deb --build as root:root.
build_deb() { # build_deb PACKAGE DIR DESCRIPTION_FILE
  local pkg=$1 dir=$2
  install -d -m 0755 "$dir/DEBIAN"
  for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$pkg.$script" "$dir/DEBIAN/$script"
  done
  if [ -d "$dir/etc" ]; then
    (cd "$dir" && find etc -type f | sed 's|^|/|' | sort) >"$dir/DEBIAN/conffiles"
    chmod 0644 "$dir/DEBIAN/conffiles"
  fi
  (cd "$dir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$dir/DEBIAN/md5sums"
  local size
  size=$(du -sk --exclude=DEBIAN "$dir" | cut -f1)
  {
    printf 'Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: %s\n' "$pkg" "$VERSION" "$ARCH" "$MAINTAINER"
    printf 'Installed-Size: %s\nSection: admin\nPriority: optional\n' "$size"
    printf 'Homepage: https://github.com/shoal/shoal\n'
    # deb-systemd-helper and deb-systemd-invoke in the maintainer scripts.
    printf 'Depends: init-system-helpers (>= 1.54~)\n'
    cat "$3"
  } >"$dir/DEBIAN/control"
  chmod 0644 "$dir/DEBIAN/control" "$dir/DEBIAN/md5sums"
  find "$dir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  local deb="$OUT/${pkg}_${VERSION}_${ARCH}.deb"
  dpkg-deb --root-owner-group "-Z${DEB_COMPRESSION:-xz}" --build "$dir" "$deb" >/dev/null
  echo "$deb"
}

# --- shoal-agent ---
A="$WORK/shoal-agent"
install -D -m 0755 "$AGENT_BIN" "$A/usr/bin/shoal-agent"
install -d -m 0755 "$A/lib/systemd/system"
# The unit as in systemd/, with the binary where the package puts it.
sed 's|/usr/local/bin/shoal-agent|/usr/bin/shoal-agent|g' systemd/shoal-agent.service \
  >"$A/lib/systemd/system/shoal-agent.service"
chmod 0644 "$A/lib/systemd/system/shoal-agent.service"
install -D -m 0644 packaging/agent.toml.example "$A/etc/shoal/agent.toml.example"
install -d -m 0755 "$A/usr/share/man/man1"
for page in "$DOCS"/man/*.1; do
  gzip -9n <"$page" >"$A/usr/share/man/man1/$(basename "$page").gz"
  chmod 0644 "$A/usr/share/man/man1/$(basename "$page").gz"
done
install -D -m 0644 "$DOCS/completions/shoal-agent.bash" "$A/usr/share/bash-completion/completions/shoal-agent"
install -D -m 0644 "$DOCS/completions/_shoal-agent" "$A/usr/share/zsh/vendor-completions/_shoal-agent"
install -D -m 0644 "$DOCS/completions/shoal-agent.fish" "$A/usr/share/fish/vendor_completions.d/shoal-agent.fish"
doc_files shoal-agent "$A"
gzip -9n <README.md >"$A/usr/share/doc/shoal-agent/README.md.gz"
chmod 0644 "$A/usr/share/doc/shoal-agent/README.md.gz"
cat >"$WORK/agent.description" <<'EOF'
Description: pull-based GitOps agent for Linux devices
 Shoal's agent pulls a signed configuration git repository, refuses anything
 not signed by a trusted SSH key or not moving forward from what it applied,
 applies the declared files and systemd services atomically with a health gate
 and local rollback, and reports to a Shoal collector.
 .
 Set it up with `shoal-agent init`, check it with `shoal-agent doctor`, then
 `systemctl enable --now shoal-agent`. The unit does not start before
 /etc/shoal/agent.toml exists.
EOF
build_deb shoal-agent "$A" "$WORK/agent.description"

# --- shoal-collector ---
if [ -n "$COLLECTOR_BIN" ]; then
  C="$WORK/shoal-collector"
  install -D -m 0755 "$COLLECTOR_BIN" "$C/usr/bin/shoal-collector"
  install -D -m 0644 systemd/shoal-collector.service "$C/lib/systemd/system/shoal-collector.service"
  install -D -m 0644 packaging/debian/shoal-collector.sysusers "$C/usr/lib/sysusers.d/shoal-collector.conf"
  doc_files shoal-collector "$C"
  gzip -9n <docs/COLLECTOR.md >"$C/usr/share/doc/shoal-collector/COLLECTOR.md.gz"
  chmod 0644 "$C/usr/share/doc/shoal-collector/COLLECTOR.md.gz"
  cat >"$WORK/collector.description" <<'EOF'
Description: collector of signed convergence reports from Shoal agents
 The collector receives the signed reports of Shoal agents and answers what
 state the fleet is in (HTTP API, Prometheus metrics, a fleet page), on an
 embedded store or PostgreSQL. It runs as its own system user with a hardened
 systemd unit; create its token files in /etc/shoal, then
 `systemctl enable --now shoal-collector`.
EOF
  build_deb shoal-collector "$C" "$WORK/collector.description"
fi

# --- the tarball: the same files, one directory ---
T="$WORK/shoal-$UPSTREAM-$TRIPLE"
install -D -m 0755 "$AGENT_BIN" "$T/shoal-agent"
[ -z "$COLLECTOR_BIN" ] || install -m 0755 "$COLLECTOR_BIN" "$T/shoal-collector"
install -d "$T/systemd" "$T/man" "$T/completions"
install -m 0644 systemd/*.service "$T/systemd/"
install -m 0644 packaging/agent.toml.example README.md "$T/"
install -m 0644 "$DOCS"/man/*.1 "$T/man/"
install -m 0644 "$DOCS"/completions/* "$T/completions/"
find "$T" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
  -C "$WORK" -czf "$OUT/shoal-$UPSTREAM-$TRIPLE.tar.gz" "shoal-$UPSTREAM-$TRIPLE"
echo "$OUT/shoal-$UPSTREAM-$TRIPLE.tar.gz"

(cd "$OUT" && find . -maxdepth 1 -type f \( -name '*.deb' -o -name '*.tar.gz' \) -printf '%P\n' |
  sort | xargs -r sha256sum >SHA256SUMS)
echo "$OUT/SHA256SUMS"

if command -v lintian >/dev/null && [ "${LINTIAN:-1}" != 0 ]; then
  # Tags left on purpose are in packaging/lintian-overrides, each with its reason.
  for deb in "$OUT"/shoal-*_"${VERSION}_${ARCH}".deb; do
    lintian --fail-on error --suppress-tags-from-file packaging/lintian-overrides "$deb" >&2
  done
fi
