#!/usr/bin/env bash
# ARM smoke test: runs the static aarch64 agent under qemu-aarch64-static (Debian's
# qemu-user-static) against real parts: an ssh-keygen ed25519 key, a git-signed config repo, an
# allowed_signers file, and the repo served over a local path, git:// (git daemon), http:// and
# https:// (git http-backend behind a small Python server; https with a CA made by openssl).
#
#   scripts/arm-smoke.sh [AGENT_BINARY]
#
# Without an argument it builds the agent with scripts/cross-build.sh aarch64-unknown-linux-musl.
# ARM_SMOKE_TARGET=armv7-unknown-linux-musleabihf tests the 32-bit build (qemu-arm-static) instead.
# Installs what is missing (as root, on Debian), prints each check, cleans up its temp dir and
# servers, and exits non-zero if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${ARM_SMOKE_TARGET:-aarch64-unknown-linux-musl}
case "$TARGET" in
  aarch64-*) QEMU=qemu-aarch64-static ELF_MACHINE=AArch64 ;;
  armv7-*) QEMU=qemu-arm-static ELF_MACHINE=ARM ;;
  *) echo "arm-smoke: no qemu for $TARGET (aarch64-* or armv7-*)" >&2; exit 2 ;;
esac

say() { printf '\n== %s\n' "$*"; }

say "arm-smoke: tools"
need=()
command -v "$QEMU" >/dev/null || need+=(qemu-user-static)
command -v git >/dev/null || need+=(git)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v openssl >/dev/null || need+=(openssl)
command -v readelf >/dev/null || need+=(binutils)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
"$QEMU" --version | head -n1

if [ $# -ge 1 ]; then
  BIN=$(realpath "$1")
else
  "$ROOT/scripts/cross-build.sh" "$TARGET"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target/cross}/$TARGET/release/shoal-agent"
fi
[ -x "$BIN" ] || { echo "arm-smoke: no agent binary at $BIN" >&2; exit 2; }
echo "agent binary: $BIN ($(stat -c %s "$BIN") bytes)"

# Everything below lives in one temp dir, and every server is stopped, whatever happens.
WORK=$(mktemp -d -t shoal-arm-smoke.XXXXXX) # $TMPDIR or /tmp
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# No user or system git config, no proxy for loopback: the run is the same on every machine.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 HOME="$WORK/home"
export NO_COLOR=1 NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
mkdir -p "$HOME"

PASSED=0
FAILED=0
# check DESCRIPTION EXPECTED_EXIT REGEX COMMAND...: runs COMMAND, wants that exit code and a
# line of its output (stdout+stderr) matching REGEX.
check() {
  local desc=$1 want=$2 regex=$3 out rc=0
  shift 3
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -eq "$want" ] && grep -Eq -- "$regex" <<<"$out"; then
    PASSED=$((PASSED + 1))
    printf 'ok    %s\n' "$desc"
  else
    FAILED=$((FAILED + 1))
    printf 'FAIL  %s: exit %s (wanted %s), output must match /%s/\n' "$desc" "$rc" "$want" "$regex"
  fi
  [ -z "$out" ] || sed 's/^/      | /' <<<"$out"
}
# The ARM agent, emulated. A timeout so a hung fetch fails the check instead of CI.
agent() { timeout 180 "$QEMU" "$BIN" "$@"; }
elf_machine() { readelf -h "$1" | grep -E '^ *(Class|Machine):'; }
is_static() { # prints "static", or the dynamic-linking entries that make it not so
  local dynamic
  dynamic=$( (readelf -lW "$1" | grep -E 'INTERP|Requesting program interpreter'; readelf -dW "$1" | grep NEEDED) || true)
  if [ -z "$dynamic" ]; then echo static; else echo "$dynamic"; return 1; fi
}
# closed_stdout COMMAND...: runs COMMAND with stdout a pipe nobody reads (its read end closed), so
# its first println! gets EPIPE and panics ("failed printing to stdout"); exits as COMMAND did,
# 128+N when killed by signal N.
closed_stdout() {
  python3 -c 'import os, subprocess, sys
r, w = os.pipe()
os.close(r)
code = subprocess.run(sys.argv[1:], stdout=w).returncode
sys.exit(128 - code if code < 0 else code)' "$@"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

say "arm-smoke: fixtures in $WORK"
KEY="$WORK/keys/operator"
mkdir -p "$WORK/keys"
ssh-keygen -q -t ed25519 -N '' -C operator@smoke -f "$KEY"
printf 'operator@smoke namespaces="git" %s\n' "$(cut -d' ' -f1,2 "$KEY.pub")" >"$WORK/allowed_signers"

REPO="$WORK/config-repo" # the operator's work tree
SRV="$WORK/srv"          # what the servers export
mkdir -p "$SRV"
cp -r "$ROOT/examples/config-repo" "$REPO"
git -C "$REPO" init -q -b production
git -C "$REPO" add -A
git -C "$REPO" -c user.name=Operator -c user.email=operator@smoke \
  -c gpg.format=ssh -c user.signingkey="$KEY.pub" commit -q -S -m "Initial fleet config"
SIGNED=$(git -C "$REPO" rev-parse HEAD)
git -C "$REPO" -c gpg.ssh.allowedSignersFile="$WORK/allowed_signers" verify-commit "$SIGNED"
git clone -q --bare "$REPO" "$SRV/config.git"
echo "signed commit $SIGNED (git verify-commit agrees)"

say "arm-smoke: servers"
# git:// — git daemon, started directly (not via the `git` wrapper) so its PID is the daemon's.
GIT_PORT=$(free_port)
"$(git --exec-path)/git-daemon" --base-path="$SRV" --export-all --reuseaddr \
  --listen=127.0.0.1 --port="$GIT_PORT" "$SRV" 2>"$WORK/git-daemon.log" &
PIDS+=($!)
wait_for 20 git ls-remote "git://127.0.0.1:$GIT_PORT/config.git" ||
  { echo "git daemon did not start"; cat "$WORK/git-daemon.log"; exit 1; }
echo "git daemon on git://127.0.0.1:$GIT_PORT/"

# http:// and https:// — git http-backend (smart HTTP) as CGI behind a tiny Python server that
# also accepts the chunked request bodies gix's reqwest transport sends.
cat >"$WORK/git-http.py" <<'PY'
import http.server, os, ssl, subprocess, sys

root, port_file = sys.argv[1], sys.argv[2]
cert = sys.argv[3:5]

class GitHttp(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.cgi(b"")

    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.cgi(body)

    def cgi(self, body):
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ["PATH"], "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": root, "GIT_HTTP_EXPORT_ALL": "1", "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_METHOD": self.command, "PATH_INFO": path,
            "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": self.client_address[0],
        }
        for header, var in (("Git-Protocol", "HTTP_GIT_PROTOCOL"), ("Content-Encoding", "HTTP_CONTENT_ENCODING")):
            if self.headers.get(header):
                env[var] = self.headers[header]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, payload = out.partition(sep)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GitHttp)
if cert:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert[0], cert[1])
    server.socket = context.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
PY
python3 "$WORK/git-http.py" "$SRV" "$WORK/http.port" 2>"$WORK/http.log" &
PIDS+=($!)

# A private CA and a server certificate for localhost / 127.0.0.1, pinned by the agent's ca_file.
TLS="$WORK/tls"
mkdir -p "$TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=shoal-smoke-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$TLS/ext"
openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
  -days 2 -extfile "$TLS/ext" -out "$TLS/server.pem" 2>/dev/null
python3 "$WORK/git-http.py" "$SRV" "$WORK/https.port" "$TLS/server.pem" "$TLS/server.key" 2>"$WORK/https.log" &
PIDS+=($!)

wait_for 20 test -s "$WORK/http.port" || { echo "http server did not start"; cat "$WORK/http.log"; exit 1; }
wait_for 20 test -s "$WORK/https.port" || { echo "https server did not start"; cat "$WORK/https.log"; exit 1; }
HTTP_URL="http://127.0.0.1:$(cat "$WORK/http.port")/config.git"
HTTPS_URL="https://localhost:$(cat "$WORK/https.port")/config.git"
git ls-remote "$HTTP_URL" >/dev/null || { echo "git cannot read $HTTP_URL"; cat "$WORK/http.log"; exit 1; }
echo "git http-backend on $HTTP_URL and $HTTPS_URL"

# One agent config (and state dir) per transport, in the README's format.
agent_config() { # agent_config NAME URL [CA_FILE]
  mkdir -p "$WORK/device-$1/root"
  {
    printf 'device_id = "smoke-%s"\nlabels    = { role = "gateway", site = "arm-smoke" }\n' "$1"
    printf 'state_dir = "state"\nroot      = "root"\n\n'
    printf '[source]\nurl     = "%s"\nref     = "refs/heads/production"\ntimeout = "30s"\nretries = 0\n' "$2"
    [ -z "${3:-}" ] || printf 'ca_file = "%s"\n' "$3"
    printf '\n[trust]\nallowed_signers = "%s"\nverify = "range"\n' "$WORK/allowed_signers"
  } >"$WORK/device-$1/agent.toml"
  echo "$WORK/device-$1/agent.toml"
}
CFG_PATH=$(agent_config path "$SRV/config.git")
CFG_GIT=$(agent_config git "git://127.0.0.1:$GIT_PORT/config.git")
CFG_HTTP=$(agent_config http "$HTTP_URL")
CFG_HTTPS=$(agent_config https "$HTTPS_URL" "$TLS/ca.pem")

say "arm-smoke: the $TARGET agent under $QEMU"
check "binary is an $ELF_MACHINE ELF" 0 "Machine:[[:space:]]+$ELF_MACHINE\$" elf_machine "$BIN"
check "binary is static (no program interpreter, no shared libraries)" 0 '^static$' is_static "$BIN"
check "shoal-agent --version" 0 '^shoal-agent [0-9]+\.[0-9]+' agent --version
check "verify: signed tip, exit 0 and the principal" 0 '^operator@smoke$' \
  agent verify "$REPO" --allowed-signers "$WORK/allowed_signers"
check "verify --json names the commit" 0 "\"commit\": \"$SIGNED\"" \
  agent verify "$REPO" --allowed-signers "$WORK/allowed_signers" --json

# Per transport: the first sync fetches, verifies, renders and applies the signed commit into the
# device's root (so the templated /etc/motd appears); the second is a no-op.
FIRST="(accepted|applied generation [0-9]+: commit) $SIGNED \\(?signed by operator@smoke"
sync_twice() { # sync_twice NAME CONFIG WHAT
  check "sync over $3: signed commit applied" 0 "$FIRST" agent --config "$2" sync
  check "sync over $3: /etc/motd rendered for smoke-$1" 0 "^Welcome to smoke-$1 at arm-smoke" \
    cat "$WORK/device-$1/root/etc/motd"
  check "sync again over $3: no-op" 0 "up to date.*$SIGNED" agent --config "$2" sync
}
# A local path makes gix spawn git-upload-pack: the host's x86 git, which qemu-user just execs.
sync_twice path "$CFG_PATH" "a local path"
sync_twice git "$CFG_GIT" "git://"
sync_twice http "$CFG_HTTP" "http://"
sync_twice https "$CFG_HTTPS" "https:// (rustls+ring, pinned CA)"
check "status --json: applied the signed commit" 0 "\"applied_commit\": \"$SIGNED\"" \
  agent --config "$CFG_HTTPS" status --json
# Device builds abort on panic and carry no unwind tables (docs/CROSS.md, "Size"): a panic must
# still print its message for the journal, then abort (SIGABRT, 128+6; qemu-user dies of it too).
check "a panic prints its message and aborts (status --json into a closed pipe)" 134 \
  'failed printing to stdout: Broken pipe' closed_stdout "$QEMU" "$BIN" --config "$CFG_HTTPS" status --json

say "arm-smoke: an unsigned commit is refused"
echo "# unsigned change" >>"$REPO/shoal.toml"
git -C "$REPO" -c user.name=Mallory -c user.email=mallory@smoke commit -q -am "Unsigned change"
UNSIGNED=$(git -C "$REPO" rev-parse HEAD)
git -C "$REPO" push -q "$SRV/config.git" production
REFUSED="refusing commit $UNSIGNED: the commit is not signed"
check "verify: unsigned tip, exit 1" 1 "$REFUSED" \
  agent verify "$REPO" --allowed-signers "$WORK/allowed_signers"
check "sync over git://: unsigned tip refused, exit 1" 1 "$REFUSED" agent --config "$CFG_GIT" sync
check "sync over https://: unsigned tip refused, exit 1" 1 "$REFUSED" agent --config "$CFG_HTTPS" sync
check "status --json: still at the signed commit" 0 "\"applied_commit\": \"$SIGNED\"" \
  agent --config "$CFG_HTTPS" status --json

say "arm-smoke: done"
echo "arm-smoke: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
