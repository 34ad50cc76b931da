#!/usr/bin/env bash
# ab-inner-loop.sh BIN... : the warm one-line push of several imgbuild binaries, side by side
# on one machine at one time, so two versions compare without the noise between two bench
# runs (docs/benchmarks.md, "The inner loop again").
#
# A fresh plain-http docker-registry on loopback; fixtures/hello-api copied and locked
# (uv lock --exclude-newer, as the bench); each binary pushes its own repository from its
# own cache once (cold), then ROUNDS one-line changes are pushed by each binary in turn.
# Prints each binary's median and all its times in ms, and the CPU time each push cost
# imgbuild (with its sandboxed Python) and docker-registry, on average.
#
#   AB_BASE    the base, an OCI layout (default ~/.cache/imgbuild-tests/base-bookworm-amd64)
#   AB_ROUNDS  rounds (default 15)
#   AB_TLS=1   the registry over TLS with htpasswd credentials (as users have it; a throwaway
#              CA and password, passed by --ca-file and REGISTRY_AUTH_FILE)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BIN..." >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${AB_BASE:-$HOME/.cache/imgbuild-tests/base-bookworm-amd64}
ROUNDS=${AB_ROUNDS:-15}
[ -f "$BASE/index.json" ] || { echo "error: no OCI layout at $BASE; set AB_BASE" >&2; exit 1; }
WORK=$(mktemp -d /tmp/imgbuild-ab.XXXXXX)
REG_PID=
trap '[ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

cp -r "$ROOT/fixtures/hello-api" "$WORK/app"
(cd "$WORK/app" && UV_PYTHON_DOWNLOADS=never uv lock --quiet --exclude-newer 2026-11-01T00:00:00Z)
cat >"$WORK/spec.toml" <<EOS
base = "oci:$BASE:latest"
source = "$WORK/app"
lockfile = "$WORK/app/uv.lock"
app = "hello_api.main:app"
port = 8000
workers = 1
platforms = ["linux/amd64"]
EOS
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '%s\n' "version: 0.1" "log:" "  level: warn" "  accesslog:" "    disabled: true" \
  "storage:" "  filesystem:" "    rootdirectory: $WORK/registry" "http:" \
  "  addr: 127.0.0.1:$PORT" "  secret: ab" >"$WORK/registry.yml"
TLS_ARGS=()
AUTH_ENV=()
if [ "${AB_TLS:-0}" = 1 ]; then
  bash "$ROOT/scripts/loopback-ca.sh" "$WORK" >"$WORK/tls.log" 2>&1 ||
    { echo "error: making certificates failed (see $WORK/tls.log)" >&2; exit 1; }
  password=$(openssl rand -hex 16)
  htpasswd -Bbn ab "$password" >"$WORK/htpasswd" 2>/dev/null
  (umask 077 && printf '{"auths":{"127.0.0.1:%s":{"auth":"%s"}}}\n' "$PORT" \
    "$(printf 'ab:%s' "$password" | base64 -w0)" >"$WORK/auth.json")
  printf '%s\n' "  tls:" "    certificate: $WORK/server.crt" "    key: $WORK/server.key" \
    "auth:" "  htpasswd:" "    realm: ab" "    path: $WORK/htpasswd" >>"$WORK/registry.yml"
  # Not exported: docker-registry reads REGISTRY_* variables as its own settings.
  TLS_ARGS=(--ca-file "$WORK/ca.crt")
  AUTH_ENV=(REGISTRY_AUTH_FILE="$WORK/auth.json")
fi
env -u REGISTRY_HTTP_ADDR /usr/bin/docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

push() {
  env "${AUTH_ENV[@]}" "$1" push -f "$WORK/spec.toml" --tag "127.0.0.1:$PORT/r$2:latest" --cache-dir "$WORK/cache$2" \
    "${TLS_ARGS[@]}" >/dev/null 2>&1
}
n=0
for bin in "$@"; do
  n=$((n + 1))
  push "$bin" "$n" || { echo "error: the cold push of $bin failed (registry log: $WORK/registry.log)" >&2; exit 1; }
done
# The CPU each push costs: imgbuild's with its sandboxed Python (bash's `time`, children
# included), and docker-registry's (its /proc stat before and after, in clock ticks).
TICK_MS=$((1000 / $(getconf CLK_TCK)))
registry_ticks() { awk '{ print $14 + $15 }' "/proc/$REG_PID/stat"; }
declare -A TIMES OURS_MS REGISTRY_MS
TIMEFORMAT='%3U %3S'
for ((round = 1; round <= ROUNDS; round++)); do
  n=0
  for bin in "$@"; do
    n=$((n + 1))
    echo "# ab change $round $n" >>"$WORK/app/hello_api/main.py"
    sleep 0.3 # not racy: the push may record its tree
    ticks=$(registry_ticks)
    start=$(date +%s%N)
    cpu=$({ time push "$bin" "$n"; } 2>&1) || { echo "error: a push of $bin failed" >&2; exit 1; }
    TIMES[$n]+="$((($(date +%s%N) - start) / 1000000)) "
    OURS_MS[$n]=$(awk -v sum="${OURS_MS[$n]:-0}" '{ print sum + ($1 + $2) * 1000 }' <<<"$cpu")
    REGISTRY_MS[$n]=$((${REGISTRY_MS[$n]:-0} + ($(registry_ticks) - ticks) * TICK_MS))
  done
done
n=0
for bin in "$@"; do
  n=$((n + 1))
  sorted=$(tr ' ' '\n' <<<"${TIMES[$n]}" | grep . | sort -n | tr '\n' ' ')
  median=$(awk '{ if (NF % 2) print $((NF + 1) / 2); else print ($(NF / 2) + $(NF / 2 + 1)) / 2 }' <<<"$sorted")
  echo "$bin: median $median ms [${sorted% }]; CPU per push: imgbuild and its Python" \
    "$(awk -v t="${OURS_MS[$n]}" -v r="$ROUNDS" 'BEGIN { printf "%d", t / r }') ms," \
    "docker-registry $((REGISTRY_MS[$n] / ROUNDS)) ms"
done
