#!/usr/bin/env bash
# Static (musl) release builds of shoal-agent for the device targets, without Docker.
#
#   scripts/cross-build.sh [TARGET...]
#
# TARGET defaults to all three: aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
# x86_64-unknown-linux-musl. Idempotent: installs only what is missing (zig and the
# cargo-zigbuild subcommand from PyPI, rustup's rust-src), builds with the workspace's
# [profile.release] plus panic = "abort", std compiled from source without unwind tables (see
# below), and prints a table of stripped binary sizes against the 8 MiB budget (DESIGN.md,
# "Budgets": set for aarch64, held here for every target) and issue 17's 5 MiB goal; fails if a
# binary is over the budget, not static, or if aws-lc or OpenSSL got into the dependency tree.
# Binaries land in $CARGO_TARGET_DIR/TARGET/release/shoal-agent; CARGO_TARGET_DIR defaults to
# target/cross so these builds never wait on the lock of a `cargo test` in target/.
#
# Why zig: `zig cc` is one C compiler and linker for every target, with its own musl, so ring's C
# and assembly are compiled for the device and the result is static, and nothing but PyPI and
# crates.io is needed (Debian's cross gcc has no musl for ARM, and cross-rs needs Docker).
# See docs/CROSS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ZIGLANG_VERSION=0.17.1        # PyPI package `ziglang`
CARGO_ZIGBUILD_VERSION=0.24.1 # PyPI (prebuilt) or crates.io
BUDGET_BYTES=$((8 * 1024 * 1024))
GOAL_BYTES=$((5 * 1024 * 1024)) # issue 17, for aarch64: printed, not enforced
DEFAULT_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf x86_64-unknown-linux-musl)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cross}"
# Device builds abort on panic: 11% smaller (docs/CROSS.md), and nothing in the agent catches a
# panic; systemd restarts it. Set here, not in [profile.release], because that profile also
# builds the collector, where tokio keeps one panicking request from taking the service down.
export CARGO_PROFILE_RELEASE_PANIC="${CARGO_PROFILE_RELEASE_PANIC:-abort}"

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'cross-build: %s\n' "$*" >&2; exit 1; }

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${DEFAULT_TARGETS[@]}")
for t in "${targets[@]}"; do
  case "$t" in
    *-linux-musl*) ;;
    *) die "$t is not a musl target; the agent ships as a static musl binary" ;;
  esac
done

say "toolchain"
command -v cargo >/dev/null || die "cargo not found (install Rust with rustup first)"
command -v python3 >/dev/null || die "python3 not found (zig and cargo-zigbuild come from PyPI)"
# pip puts cargo-zigbuild's binary in the interpreter's scripts dir (or ~/.local/bin); cargo
# finds the `zigbuild` subcommand on PATH.
PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin"
if ! command -v cargo-zigbuild >/dev/null ||
  { ! command -v zig >/dev/null && ! python3 -m ziglang version >/dev/null 2>&1; }; then
  # Both are on PyPI as prebuilt wheels: seconds, where `cargo install cargo-zigbuild` compiles
  # for about two minutes (the fallback).
  pkgs=("cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" "ziglang==$ZIGLANG_VERSION")
  echo "installing ${pkgs[*]} (pip)" >&2
  export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
  python3 -m pip install --quiet "${pkgs[@]}" ||
    python3 -m pip install --quiet --break-system-packages "${pkgs[@]}" ||
    { python3 -m pip install --quiet "ziglang==$ZIGLANG_VERSION" &&
      cargo install --quiet --locked cargo-zigbuild --version "$CARGO_ZIGBUILD_VERSION"; } ||
    die "cannot install zig and cargo-zigbuild"
  hash -r
fi
echo "zig $( (command -v zig >/dev/null && zig version) || python3 -m ziglang version), $(cargo-zigbuild --version), $(rustc --version)" >&2

# std is compiled from rust-src for every device target (-Zbuild-std, allowed on stable by
# RUSTC_BOOTSTRAP=1 for these builds only), not taken prebuilt from rustup:
# - so that std, like our code, has no unwind tables: with panic = "abort" nothing unwinds, and
#   the prebuilt std (and the code that links it) carries 0.6 MB of .eh_frame; std from source
#   takes -C force-unwind-tables=no, ring's C takes the CFLAGS below. A panic still prints its
#   message (and location) before it aborts; only the backtrace, already empty in a stripped
#   binary, is gone;
# - with std's `optimize_for_size` feature and without its backtrace symbolizer (both std
#   features: $STD_FEATURES), and optimised with the rest of the agent ("s", LTO);
# - and because rustup cannot download the prebuilt std of armv7-unknown-linux-musleabihf on
#   this network anyway (a 404), so all three targets take the same path.
# Sizes and the CPU measurement behind these choices: docs/CROSS.md, "Size".
STD_FEATURES=${STD_FEATURES-optimize_for_size}
NO_UNWIND_RUSTFLAGS="-C force-unwind-tables=no"
# std's panic locations name its sources as the prebuilt std does (/rustc/COMMIT/library/...),
# not as this machine's rustup directory.
REMAP_STD="--remap-path-prefix=$(rustc --print sysroot)/lib/rustlib/src/rust=/rustc/$(rustc -vV | sed -n 's/^commit-hash: //p')"
NO_UNWIND_CFLAGS="-fno-asynchronous-unwind-tables -fno-unwind-tables"
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/src/rust/library/std" ]; then
  echo "rustup component add rust-src" >&2
  rustup component add rust-src >&2
fi

say "dependency check: ring only, no aws-lc, no OpenSSL"
for t in "${targets[@]}"; do
  banned=$(cargo tree -q -p shoal-agent --target "$t" -e normal,build --prefix none |
    grep -E '^(aws-lc-rs|aws-lc-sys|aws-lc-fips-sys|openssl|openssl-sys|native-tls) ' | sort -u || true)
  [ -z "$banned" ] || die "$t pulls $(tr '\n' ' ' <<<"$banned")— keep TLS on rustls+ring (DESIGN.md)"
done
echo "ok: no aws-lc / openssl / native-tls in shoal-agent's tree" >&2

declare -A seconds=()
for t in "${targets[@]}"; do
  say "cargo zigbuild --release -p shoal-agent --bin shoal-agent --target $t"
  start=$SECONDS
  # With std from source, rustc has no self-contained crt1.o/crti.o of the target to name (none
  # where rustup has no prebuilt std); with link-self-contained=no it names none and zig cc
  # adds its own musl start files.
  flags_var="CARGO_TARGET_$(tr '[:lower:]-' '[:upper:]_' <<<"$t")_RUSTFLAGS"
  cflags_var="CFLAGS_$(tr '-' '_' <<<"$t")"
  env "$flags_var=${!flags_var:-} -C link-self-contained=no $NO_UNWIND_RUSTFLAGS $REMAP_STD" \
    "$cflags_var=${!cflags_var:-} $NO_UNWIND_CFLAGS" RUSTC_BOOTSTRAP=1 \
    cargo zigbuild --release -p shoal-agent --bin shoal-agent --target "$t" \
    -Zbuild-std=std,panic_abort "-Zbuild-std-features=$STD_FEATURES"
  seconds[$t]=$((SECONDS - start))
done

say "stripped binary sizes (budget: 8 MiB; issue 17's goal for aarch64: 5 MiB)"
over=0
printf '| target | bytes | MiB | of 8 MiB | of 5 MiB | static | stripped | unwind tables | build s |\n'
printf '| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |\n'
for t in "${targets[@]}"; do
  bin="$CARGO_TARGET_DIR/$t/release/shoal-agent"
  [ -f "$bin" ] || die "no binary at $bin"
  bytes=$(stat -c %s "$bin")
  if readelf -lW "$bin" | grep -q INTERP || readelf -dW "$bin" | grep -q NEEDED; then static=no; else static=yes; fi
  if readelf -SW "$bin" | grep -qE '\.symtab|\.debug_'; then stripped=no; else stripped=yes; fi
  # Unwind tables left, in bytes (.eh_frame and .eh_frame_hdr; .ARM.exidx and .ARM.extab on
  # armv7): what remains comes from zig's own musl, compiler-rt and ring's assembly.
  unwind=0
  for size in $(readelf -SW "$bin" |
    sed -n 's/.*\] \.\(eh_frame\|eh_frame_hdr\|ARM\.exidx\|ARM\.extab\) *[A-Z_]* *[0-9a-f]* *[0-9a-f]* *\([0-9a-f]*\) .*/\2/p'); do
    unwind=$((unwind + 0x$size))
  done
  awk -v t="$t" -v b="$bytes" -v budget="$BUDGET_BYTES" -v goal="$GOAL_BYTES" -v st="$static" \
    -v sp="$stripped" -v uw="$unwind" -v s="${seconds[$t]}" \
    'BEGIN { printf "| %s | %d | %.2f | %.0f%% | %.0f%% | %s | %s | %s | %d |\n", t, b, b / 1048576, 100 * b / budget, 100 * b / goal, st, sp, uw, s }'
  [ "$bytes" -le "$BUDGET_BYTES" ] || over=1
  [ "$static" = yes ] || die "$bin is not static"
  if [ "$t" = aarch64-unknown-linux-musl ] && [ "$bytes" -gt "$GOAL_BYTES" ]; then
    echo "cross-build: warning: $t is over issue 17's 5 MiB goal ($bytes > $GOAL_BYTES bytes)" >&2
  fi
done
[ "$over" -eq 0 ] || die "a binary is over the 8 MiB budget (DESIGN.md, Budgets)"
