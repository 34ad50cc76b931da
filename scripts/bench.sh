#!/usr/bin/env bash
# Benchmarks imgbuild against the route people use today for the same job, and prints
# each figure with its ratio to that peer route and the goal it is held to. Nothing here
# is a test: figures depend on the machine, its load and the network to the index.
#
#   scripts/bench.sh [deps] [push-memory] [push] [startup] [deploy] [ci] [compression] [sdist] [watch] [rebase]
#                                                              default: the first four
#
#   deps         hello-api's locked dependencies: `imgbuild build` with an empty cache
#                against `uv sync --no-cache` into a fresh venv; then imgbuild warm.
#   push-memory  peak RSS of building and pushing an image with a 1 GiB incompressible
#                layer to a local registry.
#   push         hello-api built and pushed to a local registry: imgbuild against a
#                Dockerfile built by `podman build` and pushed by `podman push`, cold and
#                after a one-line change; imgbuild's no-op push and bytes uploaded; then
#                the warm one-line and no-op pushes with the base as a registry reference
#                (pinned) on a TLS registry with htpasswd credentials.
#   deploy       fixtures/orders-api through `imgbuild manifests | imgbuild resolve` and
#                `podman kube play`, then Locust headless against the pod with uvicorn
#                workers = 1 and 2: requests per second, p50/p95 and failures.
#   compression  hello-api with `compression = "gzip"` and `"zstd"`: build CPU with the
#                wheels downloaded and the layer cache empty, the bytes of our layers,
#                and `ctr images pull` (fetch + unpack) from a local registry by a
#                containerd on a private socket.
#   watch        `imgbuild run --watch` on fixtures/orders-api (init step, SQLite): the
#                time from saving an edit to main.py to /health answering with it.
#   startup      bytecode: time from `podman run` to the first 200 on /health for
#                imgbuild without bytecode, with it, and the Dockerfile route; the
#                import time of the app's packages (also after compileall in the same
#                container); the time bytecode adds to a cold and a warm build.
#   ci           a fresh CI runner (issue 11), for hello-api and a numpy/pandas/scipy app on
#                a base with libstdc++, both bases on a local registry: a cold push; a
#                one-line change pushed from an EMPTY cache to the tag holding the previous
#                image (time over the cold push, wheels and base layers downloaded), with
#                bytecode on and with bytecode = false; a lock bump of one
#                package from an empty cache (wheels downloaded); the package layers' bytes
#                over their wheels' bytes with bytecode = false; the cold push's CPU time;
#                the CPU time (user + sys) of a cold build by this imgbuild over that of
#                imgbuild before issue 11 (BENCH_BASELINE_REV), with bytecode and without.
#   sdist        hello-api plus three packages that publish only an sdist (pypika 0.48.9,
#                docopt 0.6.2, uuid 1.30; issue 22): a cold build against hello-api's own,
#                so the difference is what building the sdists costs; then both warm (the
#                sdists are not built again).
#   rebase       hello-api pushed on the Debian base, whose tag then moves to the base with
#                libstdc++ (issue 25): `imgbuild rebase` (the new base not yet in the cache,
#                then onto a cached base) against `imgbuild push` of the same change with a
#                warm cache: time and bytes uploaded.
#
# Run scripts/setup.sh first (it builds the Debian base image into .imgbuild/base-amd64).
# Settings from the environment:
#   BENCH_COLD_RUNS  runs of each cold measurement (default 5); the median is printed
#   BENCH_WARM_RUNS  runs of each warm measurement (default 10)
#   BENCH_BASE       the base OCI layout (default .imgbuild/base-amd64)
#   BENCH_NO_BUILD=1 skip `cargo build --release`
#   BENCH_KEEP=1     keep the work directory (its path is printed)
#   BENCH_DEPLOY_USERS, BENCH_DEPLOY_TIME  Locust users and run time (default 20, 30s)
#   BENCH_WATCH_RUNS edits timed in `watch` (default 5); the median is printed
#   BENCH_BASE_CXX   the base with libstdc++ for `ci` (default .imgbuild/base-amd64-libstdcpp6,
#                    built by scripts/build-base-image.sh when missing)
#   BENCH_BASELINE_REV  the imgbuild `ci` compares cold build CPU with (default 7e88ad0,
#                    layer format 3); built once into .imgbuild/baseline/COMMIT and reused
#   BENCH_BASELINE_BIN  a ready imgbuild binary to use as that baseline instead
#   BENCH_CPU_RUNS   cold builds by each binary in that comparison (default 3); medians
#   BENCH_CI_RUNS    one-line-change pushes from an empty cache in `ci` (default 3); median
#   BENCH_PUSH_TLS_ONLY=1  `push` measures only the case of a registry base on a TLS
#                    registry with htpasswd credentials (no Dockerfile comparison)
#   BENCH_CI_CHANGE_ONLY=1  `ci` measures only hello-api's one-line changes (bytecode on
#                    and off): no CPU comparison with the baseline, no lock bump, no data app
#   BENCH_CI_DATA=1  with BENCH_CI_CHANGE_ONLY=1: the numpy/pandas/scipy app's one-line
#                    changes too
# Short commands are timed by hyperfine when it is installed (unless BENCH_NO_HYPERFINE=1),
# everything else by a loop around `date +%s%N`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE="$ROOT/scripts/bench"
IMGBUILD="$ROOT/target/release/imgbuild"
BASE_LAYOUT=${BENCH_BASE:-$ROOT/.imgbuild/base-amd64}
COLD_RUNS=${BENCH_COLD_RUNS:-5}
WARM_RUNS=${BENCH_WARM_RUNS:-10}
EXCLUDE_NEWER=2026-11-01T00:00:00Z
# Podman works here only with runc and modest limits (see scripts/setup.sh).
PODMAN=(podman --runtime runc)
PODMAN_BUILD_LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
# Every podman image this script makes is named under this prefix, and only those are removed.
IMAGE_PREFIX=localhost/imgbuild-bench

usage() { sed -n '2,66p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
SECTIONS=()
for arg in "$@"; do
  case "$arg" in
    deps | push-memory | push | startup | deploy | ci | compression | sdist | watch | rebase) SECTIONS+=("$arg") ;;
    -h | --help) usage ;;
    *) echo "error: unknown section '$arg'" >&2; usage ;;
  esac
done
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(deps push-memory push startup)
wants() { local s; for s in "${SECTIONS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

say() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# --- preconditions -----------------------------------------------------------------------
[ -f "$BASE_LAYOUT/index.json" ] ||
  die "no base image at $BASE_LAYOUT; run scripts/setup.sh (or set BENCH_BASE to an OCI layout)"
command -v uv >/dev/null || die "uv not found; run scripts/setup.sh"
command -v python3 >/dev/null || die "python3 not found; run scripts/setup.sh"
if wants push-memory || wants ci; then
  [ -x /usr/bin/time ] || die "/usr/bin/time not found; install Debian's 'time' package (scripts/setup.sh does)"
fi
if wants compression; then
  command -v containerd >/dev/null && command -v ctr >/dev/null ||
    die "containerd or ctr not found; run scripts/setup.sh --deps-only"
fi
if wants push-memory || wants push || wants ci || wants compression || wants rebase; then
  [ -x /usr/bin/docker-registry ] || die "/usr/bin/docker-registry not found; run scripts/setup.sh"
fi
if wants ci || wants rebase; then
  command -v skopeo >/dev/null || die "skopeo not found; run scripts/setup.sh --tests"
fi
if wants push; then
  command -v openssl >/dev/null && command -v htpasswd >/dev/null ||
    die "openssl or htpasswd not found (the TLS registry of \`push\`); run scripts/setup.sh --deps-only"
fi
if wants push || wants startup; then
  command -v podman >/dev/null || die "podman not found; run scripts/setup.sh"
  command -v curl >/dev/null || die "curl not found; run scripts/setup.sh"
  command -v skopeo >/dev/null || die "skopeo not found; run scripts/setup.sh --tests"
fi
if wants watch; then
  command -v podman >/dev/null || die "podman not found; run scripts/setup.sh"
  command -v curl >/dev/null || die "curl not found; run scripts/setup.sh"
fi
if wants deploy; then
  command -v podman >/dev/null || die "podman not found; run scripts/setup.sh"
  command -v locust >/dev/null || die "locust not found; run scripts/setup.sh --deps-only"
  [ -x /usr/bin/docker-registry ] || die "/usr/bin/docker-registry not found; run scripts/setup.sh"
fi
if [ "${BENCH_NO_BUILD:-}" != 1 ]; then
  say "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x "$IMGBUILD" ] || die "$IMGBUILD is missing; run cargo build --release"
if wants push-memory || wants push || wants ci; then
  "$IMGBUILD" push --help >/dev/null 2>&1 ||
    die "this imgbuild has no 'push' command; the push sections need it (run: scripts/bench.sh deps)"
fi
HAVE_HYPERFINE=false
command -v hyperfine >/dev/null && [ "${BENCH_NO_HYPERFINE:-}" != 1 ] && HAVE_HYPERFINE=true

# A directory without dots in its path: podman refuses some paths with dot-directories.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgbuild-bench.XXXXXX")
LOG="$WORK/bench.log"
REG_PID=""
REG_PORT=""
REG_DIR="$WORK/registry"

cleanup() {
  local status=$?
  registry_stop
  tls_registry_stop 2>/dev/null || true
  ctrd_stop
  if wants push || wants startup; then remove_bench_images; fi
  if wants deploy; then deploy_down; fi
  if wants watch; then watch_down; fi
  if [ "${BENCH_KEEP:-}" = 1 ] || [ $status -ne 0 ]; then
    echo "work directory kept: $WORK (log: $LOG)" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- timing ------------------------------------------------------------------------------
now_ns() { date +%s%N; }

# Runs CMD with its output appended to the log (its stdout to the file $TIMED_STDOUT
# instead, when that is set); fails the script with the log's tail if CMD fails. Sets
# ELAPSED_MS, and CPU_MS (user + system time of CMD and its children) when /usr/bin/time
# is there to measure it and TIMED_CPU is not 0.
timed() {
  local t0 t1 stdout=${TIMED_STDOUT:-$LOG} wrap=()
  # /usr/bin/time runs programs only, not this script's functions.
  if [ -x /usr/bin/time ] && [ "${TIMED_CPU:-1}" = 1 ] && [ "$(type -t "$1")" = file ]; then
    wrap=(/usr/bin/time -f '%U %S' -o "$WORK/cpu")
  fi
  echo "+ $*" >>"$LOG"
  t0=$(now_ns)
  if ! "${wrap[@]}" "$@" >>"$stdout" 2>>"$LOG"; then
    tail -n 30 "$LOG" >&2
    die "failed: $*"
  fi
  t1=$(now_ns)
  ELAPSED_MS=$(((t1 - t0) / 1000000))
  CPU_MS="n/a"
  [ ${#wrap[@]} -eq 0 ] || CPU_MS=$(awk '{ printf "%d\n", ($1 + $2) * 1000 }' "$WORK/cpu")
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {
  if (NR % 2) print a[(NR + 1) / 2]; else printf "%d\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# fast_runs N PREPARE_CMD CMD... : the median ms of N runs of CMD, a command of a few
# milliseconds, where hyperfine's lower overhead matters. PREPARE_CMD is a plain command line ("" for
# none), run untimed before each run. Sets MEDIAN_MS and ALL_MS.
fast_runs() {
  local n=$1 prepare=$2
  shift 2
  if $HAVE_HYPERFINE; then
    local json="$WORK/hyperfine.json" args=(--shell=none --warmup 2 --runs "$n" --export-json "$WORK/hyperfine.json")
    [ -n "$prepare" ] && args+=(--prepare "$prepare")
    echo "+ hyperfine ${args[*]} '$*'" >>"$LOG"
    hyperfine "${args[@]}" --style basic "$*" >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "failed: $*"; }
    MEDIAN_MS=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print(round(r["median"]*1000))' "$json")
    ALL_MS=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print(" ".join(str(round(t*1000)) for t in r["times"]))' "$json")
  else
    local i times=()
    for ((i = 0; i < n + 2; i++)); do
      [ -z "$prepare" ] || $prepare >>"$LOG" 2>&1
      TIMED_CPU=0 timed "$@"
      [ $i -lt 2 ] || times+=("$ELAPSED_MS") # the first two warm up
    done
    ALL_MS="${times[*]}"
    MEDIAN_MS=$(median "${times[@]}")
  fi
}

# ratio A B -> A/B with three decimals: two made 0.0746 a "met" against a goal of 0.07.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.3f\n", a / b }'; }
# verdict VALUE OP LIMIT -> "met" or "NOT MET"
verdict() { awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
  ok = (op == "<=") ? (v <= l) : (v < l); print (ok ? "met" : "NOT MET") }'; }

SUMMARY=()
result() { # result LINE : printed now and again in the summary at the end
  echo "    $*"
  SUMMARY+=("$*")
}

# --- the example project, locked at bench time -------------------------------------------
APP="$WORK/hello-api"
SPEC="$WORK/hello-api.toml"
prepare_app() {
  say "copying fixtures/hello-api and locking it (uv lock --exclude-newer $EXCLUDE_NEWER)"
  mkdir -p "$APP"
  (cd "$ROOT/fixtures/hello-api" && tar --exclude=.venv --exclude=__pycache__ --exclude=uv.lock -cf - .) |
    tar -xf - -C "$APP"
  (cd "$APP" && UV_PYTHON_DOWNLOADS=never uv lock --quiet --exclude-newer "$EXCLUDE_NEWER")
  # The Dockerfile route installs from this; it sits in the source tree for both routes, so
  # both images carry the same files.
  (cd "$APP" && UV_PYTHON_DOWNLOADS=never uv export --quiet --format requirements-txt --frozen \
    --no-emit-project --output-file requirements.txt)
  write_spec "$SPEC" "$APP"
}

# write_spec FILE SOURCE_DIR : an imgbuild spec like images/hello-api.toml, on the bench's
# copies of the base, source tree and lock.
write_spec() {
  cat >"$1" <<EOF
base = "oci:$BASE_LAYOUT:latest"
source = "$2"
lockfile = "$APP/uv.lock"
app = "hello_api.main:app"
port = 8000
workers = 1
platforms = ["linux/amd64"]
EOF
}

# --- a local plain-http registry ---------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts /usr/bin/docker-registry with empty storage (stopping the one before, if any).
registry_start() {
  registry_stop
  rm -rf "$REG_DIR"
  mkdir -p "$REG_DIR"
  [ -n "$REG_PORT" ] || REG_PORT=$(free_port)
  cat >"$REG_DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
  secret: imgbuild-bench
EOF
  env -u REGISTRY_HTTP_ADDR /usr/bin/docker-registry serve "$REG_DIR/config.yml" \
    >"$REG_DIR/registry.log" 2>&1 </dev/null &
  REG_PID=$!
  local i
  for ((i = 0; i < 200; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$REG_PORT") 2>/dev/null; then return 0; fi
    kill -0 "$REG_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$REG_DIR/registry.log" >&2
  die "docker-registry did not start on 127.0.0.1:$REG_PORT"
}

registry_stop() {
  [ -n "$REG_PID" ] || return 0
  kill "$REG_PID" 2>/dev/null || true
  wait "$REG_PID" 2>/dev/null || true
  REG_PID=""
}

# --- a local TLS registry with htpasswd credentials ---------------------------------------
# As tests/support/registry.rs (Setup::Htpasswd) makes it: a throwaway CA and a server
# certificate for 127.0.0.1 by openssl, a random password in a bcrypt htpasswd, and an
# auth.json (mode 0600) that skopeo and imgbuild read through REGISTRY_AUTH_FILE, so the
# password is on no command line and in no output.
TLS_PID=""
TLS_PORT=""
TLS_DIR="$WORK/registry-tls"
tls_registry_start() {
  tls_registry_stop
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR/certs"
  TLS_PORT=$(free_port)
  { bash "$ROOT/scripts/loopback-ca.sh" "$TLS_DIR" && cp "$TLS_DIR/ca.crt" "$TLS_DIR/certs/"; } \
    >>"$LOG" 2>&1 || die "making the TLS registry's certificates failed (see $LOG)"
  local user=bench password
  password=$(openssl rand -hex 16)
  htpasswd -Bbn "$user" "$password" >"$TLS_DIR/htpasswd" 2>>"$LOG" || die "htpasswd failed (see $LOG)"
  (umask 077 && printf '{"auths":{"127.0.0.1:%s":{"auth":"%s"}}}\n' "$TLS_PORT" \
    "$(printf '%s:%s' "$user" "$password" | base64 -w0)" >"$TLS_DIR/auth.json")
  printf '%s\n' "version: 0.1" "log:" "  level: warn" "  accesslog:" "    disabled: true" \
    "storage:" "  filesystem:" "    rootdirectory: $TLS_DIR/data" \
    "http:" "  addr: 127.0.0.1:$TLS_PORT" "  secret: imgbuild-bench" "  tls:" \
    "    certificate: $TLS_DIR/server.crt" "    key: $TLS_DIR/server.key" \
    "auth:" "  htpasswd:" "    realm: imgbuild-bench" "    path: $TLS_DIR/htpasswd" \
    >"$TLS_DIR/config.yml"
  env -u REGISTRY_HTTP_ADDR /usr/bin/docker-registry serve "$TLS_DIR/config.yml" \
    >"$TLS_DIR/registry.log" 2>&1 </dev/null &
  TLS_PID=$!
  local i
  for ((i = 0; i < 200; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null; then return 0; fi
    kill -0 "$TLS_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$TLS_DIR/registry.log" >&2
  die "docker-registry (TLS) did not start on 127.0.0.1:$TLS_PORT"
}

tls_registry_stop() {
  # The throwaway password goes with its registry, even when the work directory is kept.
  rm -f "$TLS_DIR/auth.json" "$TLS_DIR/htpasswd"
  [ -n "$TLS_PID" ] || return 0
  kill "$TLS_PID" 2>/dev/null || true
  wait "$TLS_PID" 2>/dev/null || true
  TLS_PID=""
}

# The "bytes_uploaded" of the --json summary that `imgbuild push --json` printed into FILE
# (every stdout line but the last, which is REF@DIGEST), and its per-layer outcomes.
push_summary() {
  python3 - "$1" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
doc = json.loads("\n".join(lines[:-1]))
outcomes = {}
def walk(v):
    if isinstance(v, dict):
        if "outcome" in v:
            outcomes[v["outcome"]] = outcomes.get(v["outcome"], 0) + 1
        for x in v.values():
            walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
walk(doc)
print(doc["bytes_uploaded"], " ".join(f"{k}={n}" for k, n in sorted(outcomes.items())) or "-")
EOF
}

# --- section 1: dependencies -------------------------------------------------------------
section_deps() {
  say "deps: cold imgbuild build vs uv sync --no-cache ($COLD_RUNS runs each)"
  local cache="$WORK/deps-cache" out="$WORK/deps-out" venv="$WORK/deps-venv"
  # The venv lives outside the source tree so the push section's Dockerfile context
  # (which is the source tree) never sees it. The two routes take turns, so both meet the
  # same network and load; the index is reached over the network by both.
  local img=() uv=() img_cpu=() uv_cpu=() i
  for ((i = 1; i <= COLD_RUNS; i++)); do
    rm -rf "$cache" "$out"
    timed "$IMGBUILD" build -f "$SPEC" --output "oci:$out" --cache-dir "$cache"
    img+=("$ELAPSED_MS") img_cpu+=("$CPU_MS")
    rm -rf "$venv"
    timed env -C "$APP" UV_PROJECT_ENVIRONMENT="$venv" UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1 \
      uv sync --frozen --no-cache --no-install-project --python 3.11
    uv+=("$ELAPSED_MS") uv_cpu+=("$CPU_MS")
  done
  local img_ms uv_ms img_all=${img[*]} uv_all=${uv[*]}
  img_ms=$(median "${img[@]}")
  uv_ms=$(median "${uv[@]}")
  local r
  r=$(ratio "$img_ms" "$uv_ms")
  result "deps cold: imgbuild build ${img_ms} ms [${img_all}], uv sync --no-cache ${uv_ms} ms [${uv_all}]," \
    "ratio imgbuild/uv ${r} (goal <= 1.5: $(verdict "$r" "<=" 1.5))"
  if [ "${img_cpu[0]}" != n/a ]; then
    # Wall time here swings with the index's latency; CPU time shows the work each does.
    img_ms=$(median "${img_cpu[@]}")
    uv_ms=$(median "${uv_cpu[@]}")
    result "deps cold, CPU time (user + sys): imgbuild ${img_ms} ms [${img_cpu[*]}]," \
      "uv ${uv_ms} ms [${uv_cpu[*]}], ratio $(ratio "$img_ms" "$uv_ms") (for information; no goal)"
  fi

  say "deps: warm imgbuild build, same lock ($WARM_RUNS runs each)"
  # The cache is warm from the last cold run. First into a new output directory each time...
  fast_runs "$WARM_RUNS" "rm -rf $out" "$IMGBUILD" build -f "$SPEC" --output "oci:$out" --cache-dir "$cache"
  result "deps warm, output to a new layout: ${MEDIAN_MS} ms [${ALL_MS}] (goal < 100 ms: $(verdict "$MEDIAN_MS" "<" 100))"
  # ...then into the layout the last run wrote, which already holds every blob.
  fast_runs "$WARM_RUNS" "" "$IMGBUILD" build -f "$SPEC" --output "oci:$out" --cache-dir "$cache"
  result "deps warm, output to the existing layout: ${MEDIAN_MS} ms [${ALL_MS}] (goal < 100 ms: $(verdict "$MEDIAN_MS" "<" 100))"
  rm -rf "$cache" "$out" "$venv"
}

# --- section 2: peak memory of a 1 GiB layer ---------------------------------------------
max_rss_kib() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
section_push_memory() {
  local big="$WORK/big-app" spec="$WORK/big.toml" out="$WORK/big-out" timelog="$WORK/time.log"
  say "push-memory: a source tree with a 1 GiB file of random data"
  mkdir -p "$big"
  cp -r "$APP/." "$big/"
  head -c 1G /dev/urandom >"$big/blob.bin"
  write_spec "$spec" "$big"
  registry_start

  say "push-memory: imgbuild build --output oci: (empty cache) under /usr/bin/time -v"
  timed /usr/bin/time -v -o "$timelog" "$IMGBUILD" build -f "$spec" --output "oci:$out" --cache-dir "$WORK/big-cache1"
  local build_rss build_ms=$ELAPSED_MS
  build_rss=$(max_rss_kib "$timelog")
  rm -rf "$out" "$WORK/big-cache1"

  say "push-memory: imgbuild push (build + push, empty cache) under /usr/bin/time -v"
  TIMED_STDOUT="$WORK/push.json" timed /usr/bin/time -v -o "$timelog" "$IMGBUILD" push -f "$spec" \
    --tag "127.0.0.1:$REG_PORT/big:1" --cache-dir "$WORK/big-cache2" --json
  local push_rss push_ms=$ELAPSED_MS sent
  push_rss=$(max_rss_kib "$timelog")
  cat "$WORK/push.json" >>"$LOG"
  sent=$(push_summary "$WORK/push.json")
  sent=${sent%% *}
  local limit=$((64 * 1024))
  result "push-memory: build of a 1 GiB layer: peak RSS $((build_rss / 1024)) MiB (${build_rss} KiB, ${build_ms} ms)" \
    "(goal < 64 MiB: $(verdict "$build_rss" "<" "$limit"))"
  result "push-memory: build + push of a 1 GiB layer: peak RSS $((push_rss / 1024)) MiB (${push_rss} KiB, ${push_ms} ms," \
    "$((sent / 1048576)) MiB uploaded)" \
    "(goal < 64 MiB: $(verdict "$push_rss" "<" "$limit"))"
  registry_stop
  rm -rf "$big" "$spec" "$WORK/big-cache2" "$REG_DIR"
}

# --- section 3: build and push, imgbuild vs a Dockerfile ---------------------------------
DOCKER_IDS=() # every image the example's builds made; a rebuild leaves the previous one untagged
remove_bench_images() {
  [ ${#DOCKER_IDS[@]} -eq 0 ] || "${PODMAN[@]}" rmi -f "${DOCKER_IDS[@]}" >>"$LOG" 2>&1 || true
  DOCKER_IDS=()
  local names
  mapfile -t names < <("${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null |
    grep "^$IMAGE_PREFIX/" || true)
  # rmi also removes the untagged parents a --layers build cached for these images.
  [ ${#names[@]} -eq 0 ] || "${PODMAN[@]}" rmi -f "${names[@]}" >>"$LOG" 2>&1 || true
}

# podman build arguments that let pip inside the build reach the host's index through the
# host's CA bundle (an intercepting proxy's CA may be in it). The index URL is read at run
# time: PIP_INDEX_URL, else `pip config`, else pip's own default.
pip_build_args() {
  PIP_ARGS=()
  local index=${PIP_INDEX_URL:-}
  [ -n "$index" ] || index=$(python3 -m pip config get global.index-url 2>/dev/null || true)
  [ -z "$index" ] || PIP_ARGS+=(--build-arg "PIP_INDEX_URL=$index")
  local ca=/etc/ssl/certs/ca-certificates.crt
  if [ -f "$ca" ]; then
    PIP_ARGS+=(--volume /etc/ssl/certs:/etc/ssl/certs:ro --build-arg "PIP_CERT=$ca")
  fi
}

# The base layout in podman's storage, plus pip: what the Dockerfile starts FROM. Untimed,
# like pulling a base image.
prepare_dockerfile_base() {
  say "push: importing the base into podman and adding pip (untimed)"
  skopeo copy --quiet "oci:$BASE_LAYOUT:latest" "containers-storage:$IMAGE_PREFIX/base:latest" >>"$LOG" 2>&1 ||
    die "skopeo copy of $BASE_LAYOUT into podman failed; see $LOG"
  local ctx="$WORK/pip-base"
  mkdir -p "$ctx"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$ctx" pip >>"$LOG" 2>&1 ||
    die "pip download pip failed; see $LOG"
  timed "${PODMAN[@]}" build "${PODMAN_BUILD_LIMITS[@]}" --layers -t "$IMAGE_PREFIX/pip-base:latest" \
    --build-arg "BASE=$IMAGE_PREFIX/base:latest" -f "$HERE/Dockerfile.pip-base" "$ctx"
}

DOCKER_IMAGE="$IMAGE_PREFIX/hello-api:latest"
# dockerfile_build_push [--no-cache] : podman build of the example, then podman push.
dockerfile_build_push() {
  "${PODMAN[@]}" build "${PODMAN_BUILD_LIMITS[@]}" --layers "$@" --network host "${PIP_ARGS[@]}" \
    --build-arg "BASE=$IMAGE_PREFIX/pip-base:latest" -t "$DOCKER_IMAGE" \
    -f "$HERE/Dockerfile.hello-api" "$APP" &&
    "${PODMAN[@]}" push --tls-verify=false "$DOCKER_IMAGE" "docker://127.0.0.1:$REG_PORT/hello-api-dockerfile:latest"
}

section_push() {
  if [ "${BENCH_PUSH_TLS_ONLY:-}" = 1 ]; then
    push_tls
    return
  fi
  local cache="$WORK/push-cache" tag
  pip_build_args
  prepare_dockerfile_base
  registry_start
  tag="127.0.0.1:$REG_PORT/hello-api-imgbuild:latest"
  local push=("$IMGBUILD" push -f "$SPEC" --tag "$tag" --cache-dir "$cache")

  say "push: cold build + push, imgbuild vs Dockerfile ($COLD_RUNS runs each)"
  local img=() dock=() i
  for ((i = 1; i <= COLD_RUNS; i++)); do
    registry_start # empty storage
    rm -rf "$cache"
    timed "${push[@]}"
    img+=("$ELAPSED_MS")
    remove_bench_images_app
    timed dockerfile_build_push --no-cache
    dock+=("$ELAPSED_MS")
    note_docker_image
  done
  local img_ms dock_ms r
  img_ms=$(median "${img[@]}")
  dock_ms=$(median "${dock[@]}")
  r=$(ratio "$img_ms" "$dock_ms")
  result "push cold: imgbuild ${img_ms} ms [${img[*]}], Dockerfile (podman build + push) ${dock_ms} ms [${dock[*]}]," \
    "ratio ${r} (goal <= 0.2: $(verdict "$r" "<=" 0.2))"

  say "push: warm build + push after a one-line change to hello_api/main.py ($WARM_RUNS runs each)"
  img=() dock=()
  local bytes=() outcomes=""
  for ((i = 1; i <= WARM_RUNS; i++)); do
    echo "# bench change $i" >>"$APP/hello_api/main.py"
    : >"$WORK/push.json"
    TIMED_STDOUT="$WORK/push.json" timed "${push[@]}" --json
    img+=("$ELAPSED_MS")
    cat "$WORK/push.json" >>"$LOG"
    local summary
    summary=$(push_summary "$WORK/push.json")
    bytes+=("${summary%% *}")
    outcomes=${summary#* }
    timed dockerfile_build_push
    dock+=("$ELAPSED_MS")
    note_docker_image
  done
  img_ms=$(median "${img[@]}")
  dock_ms=$(median "${dock[@]}")
  r=$(ratio "$img_ms" "$dock_ms")
  result "push warm (one-line change): imgbuild ${img_ms} ms [${img[*]}], Dockerfile ${dock_ms} ms [${dock[*]}]," \
    "ratio ${r} (goal <= 0.15: $(verdict "$r" "<=" 0.15))"
  result "push warm (one-line change): imgbuild ${img_ms} ms (goal <= 150 ms: $(verdict "$img_ms" "<=" 150);" \
    "issue 26: <= 50 ms: $(verdict "$img_ms" "<=" 50), ratio <= 0.07: $(verdict "$r" "<=" 0.07))"
  local b
  b=$(median "${bytes[@]}")
  result "push warm (one-line change): imgbuild uploaded ${b} bytes [${bytes[*]}], layers: ${outcomes}" \
    "(goal <= 65536: $(verdict "$b" "<=" 65536))"

  say "push: no-op imgbuild push ($WARM_RUNS runs)"
  fast_runs "$WARM_RUNS" "" "${push[@]}"
  result "push no-op: imgbuild ${MEDIAN_MS} ms [${ALL_MS}] (goal <= 50 ms: $(verdict "$MEDIAN_MS" "<=" 50);" \
    "issue 26: <= 25 ms: $(verdict "$MEDIAN_MS" "<=" 25))"
  registry_stop
  remove_bench_images
  push_tls
}

# push_tls : the warm one-line push and the no-op push as users have them: the base a
# registry reference (pinned by digest) on a TLS registry with htpasswd credentials, the
# image pushed there too (issue 26).
push_tls() {
  tls_registry_start
  local host="127.0.0.1:$TLS_PORT" auth="$TLS_DIR/auth.json" digest
  say "push (TLS, htpasswd): the base into $host"
  REGISTRY_AUTH_FILE="$auth" skopeo --insecure-policy copy --quiet --dest-cert-dir "$TLS_DIR/certs" \
    "oci:$BASE_LAYOUT:latest" "docker://$host/python:3.11" >>"$LOG" 2>&1 ||
    die "skopeo copy of the base to the TLS registry failed (see $LOG)"
  digest=$(REGISTRY_AUTH_FILE="$auth" skopeo inspect --format '{{.Digest}}' --cert-dir "$TLS_DIR/certs" \
    "docker://$host/python:3.11" 2>>"$LOG") || die "skopeo inspect on the TLS registry failed (see $LOG)"
  local spec="$WORK/hello-api-tls.toml" cache="$WORK/push-tls-cache"
  write_spec "$spec" "$APP"
  sed -i "s|^base = .*|base = \"$host/python:3.11@$digest\"|" "$spec"
  local push=(env "REGISTRY_AUTH_FILE=$auth" "$IMGBUILD" push -f "$spec" --ca-file "$TLS_DIR/ca.crt"
    --tag "$host/hello-api-imgbuild:latest" --cache-dir "$cache")
  rm -rf "$cache"
  say "push (TLS, htpasswd): cold push"
  timed "${push[@]}"
  result "push TLS+htpasswd, registry base: cold ${ELAPSED_MS} ms (for information)"

  say "push (TLS, htpasswd): warm build + push after a one-line change ($WARM_RUNS runs)"
  local i img=()
  for ((i = 1; i <= WARM_RUNS; i++)); do
    echo "# bench tls change $i" >>"$APP/hello_api/main.py"
    TIMED_CPU=0 timed "${push[@]}"
    img+=("$ELAPSED_MS")
  done
  local img_ms
  img_ms=$(median "${img[@]}")
  result "push TLS+htpasswd, registry base: warm one-line change ${img_ms} ms [${img[*]}]" \
    "(goal <= 50 ms: $(verdict "$img_ms" "<=" 50))"

  say "push (TLS, htpasswd): no-op push ($WARM_RUNS runs)"
  fast_runs "$WARM_RUNS" "" "${push[@]}"
  result "push TLS+htpasswd, registry base: no-op ${MEDIAN_MS} ms [${ALL_MS}]" \
    "(goal <= 25 ms: $(verdict "$MEDIAN_MS" "<=" 25))"
  tls_registry_stop
}

note_docker_image() { DOCKER_IDS+=("$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$DOCKER_IMAGE")"); }

# Removes the example image (and its cached build layers) but keeps the bases.
remove_bench_images_app() {
  "${PODMAN[@]}" rmi -f "$DOCKER_IMAGE" >>"$LOG" 2>&1 || true
}

# --- section 4: start-up time with and without bytecode ----------------------------------
# write_spec_bytecode FILE SETTING : the bench spec with `bytecode` (and bytecode-stdlib) set.
write_spec_bytecode() {
  write_spec "$1" "$APP"
  case "$2" in
    off) echo "bytecode = false" >>"$1" ;;
    nostdlib) echo "bytecode-stdlib = false" >>"$1" ;;
    on) ;;
  esac
}

# startup_ms IMAGE : ms from `podman run -d` to the first 200 on /health (polled every 10 ms).
startup_ms() {
  local port t0 t1 id
  port=$(free_port)
  t0=$(now_ns)
  id=$("${PODMAN[@]}" run -d --read-only "${PODMAN_BUILD_LIMITS[@]}" -p "127.0.0.1:$port:8000" "$1")
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; do
    sleep 0.01
    [ $((($(now_ns) - t0) / 1000000)) -lt 60000 ] || { "${PODMAN[@]}" logs "$id" >&2; die "$1 did not answer /health within 60 s"; }
  done
  t1=$(now_ns)
  "${PODMAN[@]}" rm -f -t 0 "$id" >>"$LOG" 2>&1
  echo $(((t1 - t0) / 1000000))
}

# The process that imports the app's packages: interpreter start-up included.
IMPORT_SNIPPET='s=$(date +%s%N); "$PY" -c "import uvicorn.main, hello_api.main"; e=$(date +%s%N); echo $(((e - s) / 1000000))'

# import_ms IMAGE PYTHON : median ms of 5 fresh read-only containers importing the app as the image's user.
import_ms() {
  local i times=()
  for ((i = 0; i < 5; i++)); do
    times+=("$("${PODMAN[@]}" run --rm --read-only "${PODMAN_BUILD_LIMITS[@]}" -e PY="$2" --entrypoint sh "$1" -c "$IMPORT_SNIPPET")")
  done
  echo "$(median "${times[@]}") [${times[*]}]"
}

# compiled_import_ms IMAGE PYTHON : the same, 5 times in one container after `compileall` of everything.
compiled_import_ms() {
  "${PODMAN[@]}" run --rm --user 0 "${PODMAN_BUILD_LIMITS[@]}" -e PY="$2" --entrypoint sh "$1" -c \
    "\"\$PY\" -m compileall -q -j 0 / >/dev/null 2>&1; for i in 1 2 3 4 5; do $IMPORT_SNIPPET; done" |
    tr '\n' ' ' | { read -r -a t; echo "$(median "${t[@]}") [${t[*]}]"; }
}

section_startup() {
  local v spec cache="$WORK/startup-cache" out="$WORK/startup-out"
  say "startup: cold and warm imgbuild builds without and with bytecode"
  for v in off on; do
    spec="$WORK/startup-$v.toml"
    write_spec_bytecode "$spec" "$v"
    local cold=() i
    for ((i = 1; i <= COLD_RUNS; i++)); do
      rm -rf "$cache" "$out"
      timed "$IMGBUILD" build -f "$spec" --output "oci:$out" --cache-dir "$cache"
      cold+=("$ELAPSED_MS")
    done
    fast_runs "$WARM_RUNS" "rm -rf $out" "$IMGBUILD" build -f "$spec" --output "oci:$out" --cache-dir "$cache"
    result "startup build, bytecode $v: cold $(median "${cold[@]}") ms [${cold[*]}], warm ${MEDIAN_MS} ms [${ALL_MS}]"
  done

  say "startup: images into podman (untimed)"
  for v in off on nostdlib; do
    spec="$WORK/startup-$v.toml"
    write_spec_bytecode "$spec" "$v"
    "$IMGBUILD" build -f "$spec" --output "docker-archive:$WORK/startup-$v.tar:$IMAGE_PREFIX/startup-$v:latest" \
      --cache-dir "$cache" >>"$LOG" 2>&1 || die "building the $v image failed; see $LOG"
    "${PODMAN[@]}" load -q -i "$WORK/startup-$v.tar" >>"$LOG" 2>&1 || die "podman load failed; see $LOG"
    rm -f "$WORK/startup-$v.tar"
  done
  pip_build_args
  prepare_dockerfile_base
  "${PODMAN[@]}" build "${PODMAN_BUILD_LIMITS[@]}" --layers --network host "${PIP_ARGS[@]}" \
    --build-arg "BASE=$IMAGE_PREFIX/pip-base:latest" -t "$DOCKER_IMAGE" \
    -f "$HERE/Dockerfile.hello-api" "$APP" >>"$LOG" 2>&1 || die "podman build failed; see $LOG"

  say "startup: podman run -> first 200 on /health ($COLD_RUNS runs each, taking turns)"
  local off=() on=() dock=() i
  for ((i = 1; i <= COLD_RUNS; i++)); do
    off+=("$(startup_ms "$IMAGE_PREFIX/startup-off:latest")")
    on+=("$(startup_ms "$IMAGE_PREFIX/startup-on:latest")")
    dock+=("$(startup_ms "$DOCKER_IMAGE")")
  done
  local off_ms on_ms dock_ms r
  off_ms=$(median "${off[@]}") on_ms=$(median "${on[@]}") dock_ms=$(median "${dock[@]}")
  r=$(ratio "$on_ms" "$dock_ms")
  result "startup to first 200: imgbuild without bytecode ${off_ms} ms [${off[*]}], with bytecode ${on_ms} ms [${on[*]}]," \
    "Dockerfile ${dock_ms} ms [${dock[*]}]; with bytecode / Dockerfile ${r} (goal <= 1.1: $(verdict "$r" "<=" 1.1))"

  say "startup: importing uvicorn and the app, as the image's user, --read-only (median of 5)"
  local venv_py=/app/.venv/bin/python imp_off imp_on imp_nostd imp_compiled imp_dock
  imp_off=$(import_ms "$IMAGE_PREFIX/startup-off:latest" "$venv_py")
  imp_on=$(import_ms "$IMAGE_PREFIX/startup-on:latest" "$venv_py")
  imp_nostd=$(import_ms "$IMAGE_PREFIX/startup-nostdlib:latest" "$venv_py")
  imp_compiled=$(compiled_import_ms "$IMAGE_PREFIX/startup-on:latest" "$venv_py")
  imp_dock=$(import_ms "$DOCKER_IMAGE" python3)
  r=$(ratio "${imp_off%% *}" "${imp_on%% *}")
  result "startup imports: without bytecode ${imp_off} ms, with bytecode ${imp_on} ms:" \
    "${r}x faster (goal >= 1.8: $(verdict 1.8 "<=" "$r"))"
  r=$(ratio "${imp_on%% *}" "${imp_compiled%% *}")
  result "startup imports: with bytecode / after compileall in the container (${imp_compiled} ms) ${r}" \
    "(goal <= 1.3: $(verdict "$r" "<=" 1.3))"
  result "startup imports: bytecode without the stdlib layer ${imp_nostd} ms; Dockerfile route ${imp_dock} ms (for information)"
  rm -rf "$cache" "$out"
  remove_bench_images
}

# --- section 5: deploy -------------------------------------------------------------------
# fixtures/orders-api through `imgbuild manifests -o - | imgbuild resolve -f -` to the local
# registry, played with `podman kube play`, and loaded with Locust. The played copy of the
# Deployment differs as in tests/deploy_e2e.rs: hostPort on 127.0.0.1, and restartPolicy
# OnFailure for podman 4.3's init-container bug. The CPU limit is raised to 2 so that two
# workers are not capped at one core.
DEPLOY_NAME=imgbuild-bench-orders
DEPLOY_PLAYED=""
deploy_down() {
  [ -n "$DEPLOY_PLAYED" ] || return 0
  "${PODMAN[@]}" kube down "$DEPLOY_PLAYED" >>"$LOG" 2>&1 || true
  DEPLOY_PLAYED=""
}

# deploy_play_copy RESOLVED OUT PORT : the Deployment document of RESOLVED, made playable.
deploy_play_copy() {
  python3 - "$@" <<'EOF'
import sys
doc = open(sys.argv[1]).read().split("\n---\n")[0]
doc = doc.replace("containerPort: 8000\n", "containerPort: 8000\n              hostPort: %s\n"
                  "              hostIP: 127.0.0.1\n" % sys.argv[3], 1)
doc = doc.replace("      automountServiceAccountToken: false\n",
                  "      automountServiceAccountToken: false\n      restartPolicy: OnFailure\n", 1)
open(sys.argv[2], "w").write(doc)
EOF
}

# locust_summary STATS_CSV : one line from Locust's aggregated row.
locust_summary() {
  python3 - "$1" <<'EOF'
import csv, sys
row = next(r for r in csv.DictReader(open(sys.argv[1])) if r["Name"] == "Aggregated")
failures = row["Failure Count"]
print(f'{float(row["Requests/s"]):.0f} req/s, p50 {row["50%"]} ms, p95 {row["95%"]} ms, '
      f'{row["Request Count"]} requests, {failures} failures '
      f'(goal 0 failures: {"met" if failures == "0" else "NOT MET"})')
EOF
}

section_deploy() {
  local users=${BENCH_DEPLOY_USERS:-20} duration=${BENCH_DEPLOY_TIME:-30s}
  local app="$WORK/orders-api" workers port image i
  say "deploy: copying fixtures/orders-api and locking it"
  mkdir -p "$app"
  (cd "$ROOT/fixtures/orders-api" && tar --exclude=.venv --exclude=__pycache__ --exclude=uv.lock -cf - .) |
    tar -xf - -C "$app"
  (cd "$app" && UV_PYTHON_DOWNLOADS=never uv lock --quiet --exclude-newer "$EXCLUDE_NEWER")
  registry_start
  for workers in 1 2; do
    cat >"$app/imgbuild.toml" <<EOF
base = "oci:$BASE_LAYOUT:latest"
app = "orders_api.main:app"
image = "127.0.0.1:$REG_PORT/orders-api"
init = ["python", "-m", "orders_api.migrate"]
health = "/health"
[deploy]
name = "$DEPLOY_NAME"
workers = $workers
resources = { limits = { cpu = "2" } }
EOF
    say "deploy: manifests -o - | resolve -f -, workers = $workers"
    if ! (cd "$app" && "$IMGBUILD" manifests -o - 2>>"$LOG" |
      "$IMGBUILD" resolve -f - --insecure-registry "127.0.0.1:$REG_PORT" >"$WORK/resolved-$workers.yaml" 2>>"$LOG"); then
      tail -n 20 "$LOG" >&2
      die "manifests | resolve failed"
    fi
    port=$(free_port)
    DEPLOY_PLAYED="$WORK/play-$workers.yaml"
    deploy_play_copy "$WORK/resolved-$workers.yaml" "$DEPLOY_PLAYED" "$port"
    "${PODMAN[@]}" kube play --tls-verify=false "$DEPLOY_PLAYED" >>"$LOG" 2>&1 || die "podman kube play failed (log: $LOG)"
    for ((i = 0; i < 240; i++)); do
      python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$port/health" 2>/dev/null && break
      sleep 0.25
    done
    say "deploy: locust --headless -u $users -t $duration against the pod, workers = $workers"
    # Locust exits 1 when a request failed; the summary reports the failures.
    locust -f "$HERE/locustfile.py" --headless -u "$users" -r "$users" -t "$duration" \
      --host "http://127.0.0.1:$port" --csv "$WORK/locust-$workers" --only-summary >>"$LOG" 2>&1 || true
    result "deploy workers=$workers ($users users, $duration): $(locust_summary "$WORK/locust-${workers}_stats.csv")"
    image=$(awk '/image:/ { gsub(/"/, "", $2); print $2; exit }' "$DEPLOY_PLAYED")
    deploy_down
    "${PODMAN[@]}" rmi -f "$image" >>"$LOG" 2>&1 || true
  done
  registry_stop
}

# --- section: imgbuild run --watch (issue 24) ----------------------------------------------
# fixtures/orders-api under `imgbuild run --watch`, published on 127.0.0.1: each run edits
# the /health answer in main.py and times until /health answers with the edit. What that
# holds: the poll (every 200 ms), a warm build (only the app layer is new), podman pulling
# that layer from the OCI layout, the old app stopped, the init step run, the new app
# started and uvicorn importing it. Goal (issue 24): 2 s.
WATCH_PID=""
watch_down() {
  [ -n "$WATCH_PID" ] || return 0
  kill -INT "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  WATCH_PID=""
}

# watch_until URL TEXT SECONDS : polls URL until its body holds TEXT; fails after SECONDS.
watch_until() {
  local deadline=$(($(date +%s) + $3))
  until curl -s --max-time 2 "$1" 2>/dev/null | grep -q "$2"; do
    [ "$(date +%s)" -lt "$deadline" ] || { tail -n 30 "$LOG" >&2; die "$1 never answered $2"; }
    sleep 0.02
  done
}

section_watch() {
  local runs=${BENCH_WATCH_RUNS:-5} app="$WORK/watch-orders" port i t0 t1 times=() med
  say "watch: copying fixtures/orders-api and locking it"
  mkdir -p "$app"
  (cd "$ROOT/fixtures/orders-api" && tar --exclude=.venv --exclude=__pycache__ --exclude=uv.lock -cf - .) |
    tar -xf - -C "$app"
  (cd "$app" && UV_PYTHON_DOWNLOADS=never uv lock --quiet --exclude-newer "$EXCLUDE_NEWER")
  cat >"$app/imgbuild.toml" <<EOF
base = "oci:$BASE_LAYOUT:latest"
app = "orders_api.main:app"
init = ["python", "-m", "orders_api.migrate"]
health = "/health"
[deploy]
name = "imgbuild-bench-watch"
EOF
  port=$(free_port)
  say "watch: imgbuild run --watch on 127.0.0.1:$port (the first build is cold)"
  # -v: each step's time goes to the log, and its medians into the summary.
  (cd "$app" && exec "$IMGBUILD" -v run --watch -p "$port" --cache-dir "$WORK/watch-cache") >"$WORK/watch.log" 2>&1 &
  WATCH_PID=$!
  watch_until "http://127.0.0.1:$port/health" '"ok"' 600
  for ((i = 1; i <= runs; i++)); do
    sleep 1
    t0=$(now_ns)
    sed -i -E "s/return \{\"status\": \"[^\"]*\"\}/return {\"status\": \"edit-$i\"}/" "$app/orders_api/main.py"
    watch_until "http://127.0.0.1:$port/health" "edit-$i" 60
    t1=$(now_ns)
    times+=($(((t1 - t0) / 1000000)))
  done
  med=$(median "${times[@]}")
  result "watch: an edit saved -> served by imgbuild run --watch: median ${med} ms (${times[*]})" \
    "(goal <= 2000: $(verdict "$med" "<=" 2000))"
  watch_down
  cat "$WORK/watch.log" >>"$LOG"
  local step steps=""
  for step in "rebuilt" "handed to the engine" "init step run" "old app stopped"; do
    # shellcheck disable=SC2046 # one number a line
    steps+="$step $(median $(sed -n "s/^$step in \([0-9]*\) ms$/\1/p" "$WORK/watch.log")) ms; "
  done
  result "watch: medians of its steps (the last two run side by side): ${steps%; }"
}

# --- section: a fresh CI runner, the registry as the cache (issue 11) ---------------------
BASE_CXX=${BENCH_BASE_CXX:-$ROOT/.imgbuild/base-amd64-libstdcpp6}
CI_RUNS=${BENCH_CI_RUNS:-3}
# Issue 11's CPU goal is set against imgbuild before its work: layer format 3, with
# bytecode already in.
BASELINE_REV=${BENCH_BASELINE_REV:-7e88ad0}
CPU_RUNS=${BENCH_CPU_RUNS:-3}
BASELINE_BIN=""

# Sets BASELINE_BIN: BENCH_BASELINE_BIN, or imgbuild at BASELINE_REV, built once into
# .imgbuild/baseline/COMMIT (source from `git archive`, its own target directory, so
# neither this checkout nor the repository's worktree list is touched) and reused after.
baseline_binary() {
  if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
    [ -x "$BENCH_BASELINE_BIN" ] || die "BENCH_BASELINE_BIN=$BENCH_BASELINE_BIN is not an executable"
    BASELINE_BIN=$BENCH_BASELINE_BIN
    return 0
  fi
  local sha dir
  sha=$(git -C "$ROOT" rev-parse --verify --quiet "$BASELINE_REV^{commit}") ||
    die "BENCH_BASELINE_REV=$BASELINE_REV is not a commit of $ROOT"
  dir="$ROOT/.imgbuild/baseline/$sha"
  BASELINE_BIN="$dir/target/release/imgbuild"
  [ -x "$BASELINE_BIN" ] && return 0
  say "ci: building imgbuild at $BASELINE_REV into $dir (once; reused by later runs)"
  # A fresh copy of the source: a half-extracted one from an interrupted run is not trusted.
  rm -rf "$dir/src"
  mkdir -p "$dir/src"
  git -C "$ROOT" archive "$sha" | tar -xf - -C "$dir/src" || die "git archive $sha into $dir/src failed"
  (cd "$dir/src" && cargo build --release --locked --quiet --target-dir "$dir/target") >>"$LOG" 2>&1 ||
    { tail -n 30 "$LOG" >&2; die "building imgbuild at $BASELINE_REV failed"; }
  [ -x "$BASELINE_BIN" ] || die "building imgbuild at $BASELINE_REV left no $BASELINE_BIN"
}

# ci_lock DIR : uv lock at the bench's date, with the user's index settings.
ci_lock() { (cd "$1" && UV_PYTHON_DOWNLOADS=never uv lock --quiet --exclude-newer "$EXCLUDE_NEWER"); }

# ci_app NAME DEPS... : a project in $WORK/ci-NAME whose package NAME_app has a main.py,
# locked with DEPS.
ci_app() {
  local name=$1 dir="$WORK/ci-$1"
  shift
  mkdir -p "$dir/${name}_app"
  printf 'app = None\n' >"$dir/${name}_app/main.py"
  : >"$dir/${name}_app/__init__.py"
  {
    printf '[project]\nname = "%s"\nversion = "0.1.0"\nrequires-python = ">=3.11"\ndependencies = [' "$name"
    local d sep=""
    for d in "$@"; do printf '%s"%s"' "$sep" "$d"; sep=", "; done
    printf ']\n\n[tool.uv]\npackage = false\n'
  } >"$dir/pyproject.toml"
  ci_lock "$dir"
}

# ci_spec FILE SOURCE BASE_REF MODULE [EXTRA] : a spec on a registry base.
ci_spec() {
  cat >"$1" <<EOF
base = "$3"
source = "$2"
lockfile = "$2/uv.lock"
app = "$4:app"
platforms = ["linux/amd64"]
${5:-}
EOF
}

# ci_push SPEC TAG CACHE : a timed `imgbuild push --json`; sets ELAPSED_MS, CPU_MS,
# DOWNLOADS (the wheels it downloaded: the summary's wheels_downloaded, over its images)
# and BASE_LAYERS (the base layers it downloaded: base_layers_downloaded).
ci_push() {
  local json="$WORK/ci-push.json" counts
  : >"$json"
  TIMED_STDOUT="$json" timed "$IMGBUILD" push -f "$1" --tag "$2" --cache-dir "$3" --json
  cat "$json" >>"$LOG"
  counts=$(python3 - "$json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[: text.rindex("}") + 1])
print(sum(i["wheels_downloaded"] for i in doc["images"]),
      sum(i["base_layers_downloaded"] for i in doc["images"]))
PY
  ) || die "ci: no wheels_downloaded or base_layers_downloaded in the --json summary of the push (see $LOG)"
  DOWNLOADS=${counts% *}
  BASE_LAYERS=${counts#* }
}

# ci_bytes SPEC CACHE : "LAYER_BYTES WHEEL_BYTES" of a cold build into CACHE: the package
# layers (from the --json summary) and the wheels they came from (the store's blobs that
# the lock names by hash).
ci_bytes() {
  local out="$WORK/ci-bytes-out" json="$WORK/ci-bytes.json" lock
  lock=$(awk -F'"' '/^lockfile/ {print $2}' "$1")
  rm -rf "$out" "$2"
  : >"$json"
  TIMED_STDOUT="$json" timed "$IMGBUILD" build -f "$1" --json --output "oci:$out" --cache-dir "$2"
  python3 - "$json" "$lock" "$2" <<'PY'
import json, os, re, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[: text.rindex("}") + 1])
skip = {"base", "venv", "app", "stdlib bytecode"}
layers = sum(l["size"] for i in doc["images"] for l in i["layers"] if l["label"] not in skip)
hashes = set(re.findall(r'hash = "sha256:([0-9a-f]{64})"', open(sys.argv[2]).read()))
blobs = os.path.join(sys.argv[3], "blobs", "sha256")
wheels = sum(os.path.getsize(os.path.join(blobs, h)) for h in os.listdir(blobs) if h in hashes)
print(layers, wheels)
PY
  rm -rf "$out"
}

# locked_version UV_LOCK NAME : the version the lock has of package NAME.
locked_version() {
  python3 - "$1" "$2" <<'PY'
import sys
for block in open(sys.argv[1]).read().split("[[package]]"):
    lines = block.splitlines()
    if 'name = "%s"' % sys.argv[2] in lines:
        print(next(l.split('"')[1] for l in lines if l.startswith("version = ")))
        break
PY
}

# without_bytecode SPEC OUT : SPEC with `bytecode = false`, written to OUT.
without_bytecode() {
  sed '/^bytecode/d' "$1" >"$2"
  echo "bytecode = false" >>"$2"
}

# ci_cpu NAME SPEC : issue 11's CPU figure: cold builds (an empty cache; a build, not a
# push, so the registry's work is out) by this imgbuild and by the baseline's, with SPEC as
# it is and with bytecode = false, CPU_RUNS each; prints the medians and their ratio.
ci_cpu() {
  local name=$1 spec=$2 nobc="$WORK/ci-$1-cpu-nobc.toml"
  without_bytecode "$2" "$nobc"
  ci_cpu_compare "$name" "$spec"
  ci_cpu_compare "$name (bytecode = false)" "$nobc"
}

# ci_cpu_compare LABEL SPEC : one line of ci_cpu.
ci_cpu_compare() {
  local out="$WORK/ci-cpu-out" cache="$WORK/ci-cpu-cache" now=() before=() i bin order
  say "ci $1: cold build CPU, this imgbuild against $BASELINE_REV ($CPU_RUNS runs each, alternating)"
  for ((i = 0; i < CPU_RUNS; i++)); do
    # Which goes first alternates too, so neither always meets the other's leftovers (page
    # cache, the index's caches) or a burst of load.
    order=("$IMGBUILD" "$BASELINE_BIN")
    [ $((i % 2)) -eq 0 ] || order=("$BASELINE_BIN" "$IMGBUILD")
    for bin in "${order[@]}"; do
      rm -rf "$out" "$cache"
      timed "$bin" build -f "$2" --output "oci:$out" --cache-dir "$cache"
      if [ "$bin" = "$IMGBUILD" ]; then now+=("$CPU_MS"); else before+=("$CPU_MS"); fi
    done
  done
  rm -rf "$out" "$cache"
  local now_ms before_ms r
  now_ms=$(median "${now[@]}")
  before_ms=$(median "${before[@]}")
  r=$(ratio "$now_ms" "$before_ms")
  result "ci $1: cold build CPU: now ${now_ms} ms, before ($BASELINE_REV) ${before_ms} ms, ratio ${r}" \
    "(goal <= 0.6: $(verdict "$r" "<=" 0.6)) [now ${now[*]}; before ${before[*]}]"
}

# ci_change NAME LABEL SPEC MAIN_FILE TAG : a cold push of SPEC from an empty cache, then
# CI_RUNS one-line changes to MAIN_FILE, each pushed from an empty cache to TAG (which holds
# the previous image); prints the median over the cold push and what the changes downloaded.
ci_change() {
  local name=$1 label=$2 spec=$3 main=$4 tag=$5 c
  say "ci $name ($label): cold push from an empty cache"
  c="$WORK/ci-cache-cold"
  rm -rf "$c"
  # Each timed push starts with the earlier steps' writes on disk, not still being flushed.
  sync
  ci_push "$spec" "$tag" "$c"
  local cold_ms=$ELAPSED_MS cold_cpu=$CPU_MS
  result "ci $name ($label): cold push ${cold_ms} ms, CPU (user + sys) ${cold_cpu} ms," \
    "${DOWNLOADS} wheels and ${BASE_LAYERS} base layers downloaded" \
    "(for information; the CPU goal is held by the cold build lines against $BASELINE_REV)"

  say "ci $name ($label): a one-line change pushed from an empty cache to the tag holding the previous image ($CI_RUNS runs)"
  local run all=() downloads=0 base_layers=0
  for ((run = 1; run <= CI_RUNS; run++)); do
    # A new line each run: each push is a new image over the one the run before pushed.
    echo "# ci bench change $label $run" >>"$main"
    c="$WORK/ci-cache-change-$run"
    rm -rf "$c"
    sync
    ci_push "$spec" "$tag" "$c"
    all+=("$ELAPSED_MS")
    downloads=$((downloads + DOWNLOADS))
    base_layers=$((base_layers + BASE_LAYERS))
  done
  local change_ms r
  change_ms=$(median "${all[@]}")
  r=$(ratio "$change_ms" "$cold_ms")
  result "ci $name ($label): one-line change, empty cache: ${change_ms} ms [${all[*]}], ratio over cold ${r}" \
    "(goal <= 0.15: $(verdict "$r" "<=" 0.15)), in all ${downloads} wheels downloaded" \
    "(goal 0: $(verdict "$downloads" "<=" 0)) and ${base_layers} base layers" \
    "(goal 0: $(verdict "$base_layers" "<=" 0))"
}

# ci_case NAME SPEC MAIN_FILE BUMP : the fresh-runner figures for one app.
ci_case() {
  local name=$1 spec=$2 main=$3 bump=$4 host="127.0.0.1:$REG_PORT"
  local tag="$host/ci-$name:main" c r nobc="$WORK/ci-$1-change-nobc.toml"
  ci_change "$name" "bytecode on" "$spec" "$main" "$tag"
  # Its own repository: the bytecode-on image there is not the previous image of this one.
  without_bytecode "$spec" "$nobc"
  ci_change "$name" "bytecode = false" "$nobc" "$main" "$host/ci-$name-nobc:main"
  if [ "${BENCH_CI_CHANGE_ONLY:-}" = 1 ]; then
    rm -rf "$WORK"/ci-cache-*
    return
  fi

  say "ci $name: a lock bump of $bump from an empty cache"
  local dir version
  dir=$(dirname "$(dirname "$main")")
  version=$(locked_version "$dir/uv.lock" "$bump")
  [ -n "$version" ] || die "ci $name: the lock has no $bump"
  printf 'constraint-dependencies = ["%s<%s"]\n' "$bump" "$version" >>"$dir/pyproject.toml"
  ci_lock "$dir"
  c="$WORK/ci-cache-bump"
  rm -rf "$c"
  ci_push "$spec" "$tag" "$c"
  result "ci $name: lock bump of $bump (below $version), empty cache: ${ELAPSED_MS} ms," \
    "${DOWNLOADS} wheels downloaded (goal exactly 1: $([ "$DOWNLOADS" = 1 ] && echo met || echo NOT MET))"

  say "ci $name: package layer bytes over wheel bytes, bytecode = false"
  local nobc="$WORK/ci-$name-nobc.toml" bytes
  without_bytecode "$spec" "$nobc"
  bytes=$(ci_bytes "$nobc" "$WORK/ci-cache-bytes")
  r=$(ratio "${bytes%% *}" "${bytes##* }")
  result "ci $name: package layers ${bytes%% *} bytes over their wheels ${bytes##* } bytes = ${r}" \
    "(goal <= 1.1: $(verdict "$r" "<=" 1.1))"
  rm -rf "$WORK"/ci-cache-*
}

section_ci() {
  local quick=${BENCH_CI_CHANGE_ONLY:-}
  if [ "$quick" != 1 ]; then
    baseline_binary
    say "ci: baseline $("$BASELINE_BIN" --version) ($BASELINE_BIN)"
  fi
  if [ ! -f "$BASE_CXX/index.json" ]; then
    say "ci: building the base with libstdc++ into $BASE_CXX"
    bash "$ROOT/scripts/build-base-image.sh" amd64 "$BASE_CXX" libstdc++6 >>"$LOG" 2>&1 ||
      die "building the libstdc++ base failed (see $LOG)"
  fi
  registry_start
  local host="127.0.0.1:$REG_PORT"
  say "ci: both bases into the local registry"
  local b
  for b in "$BASE_LAYOUT python" "$BASE_CXX python-cxx"; do
    skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
      "oci:${b% *}:latest" "docker://$host/${b#* }:3.11" >>"$LOG" 2>&1 ||
      die "skopeo copy of ${b% *} failed (see $LOG)"
  done

  local hello="$WORK/ci-hello"
  mkdir -p "$hello"
  cp -r "$APP/." "$hello/"
  ci_spec "$WORK/ci-hello.toml" "$hello" "$host/python:3.11" hello_api.main
  # Before ci_case, which edits the app and bumps its lock.
  [ "$quick" = 1 ] || ci_cpu hello-api "$WORK/ci-hello.toml"
  ci_case hello-api "$WORK/ci-hello.toml" "$hello/hello_api/main.py" idna
  if [ "$quick" = 1 ] && [ "${BENCH_CI_DATA:-}" != 1 ]; then
    registry_stop
    return
  fi

  say "ci: locking the numpy/pandas/scipy app (uv lock --exclude-newer $EXCLUDE_NEWER)"
  ci_app data numpy pandas scipy
  ci_spec "$WORK/ci-data.toml" "$WORK/ci-data" "$host/python-cxx:3.11" data_app.main \
    'cmd = ["python", "-c", "import numpy, pandas, scipy"]'
  [ "$quick" = 1 ] || ci_cpu data "$WORK/ci-data.toml"
  ci_case data "$WORK/ci-data.toml" "$WORK/ci-data/data_app/main.py" tzdata
  registry_stop
}

# --- section: gzip against zstd ---------------------------------------------------------
CTRD_DIR=""
CTRD_PID=""
# containerd with its own root, state and socket (a short path: sun_path is small).
ctrd_start() {
  CTRD_DIR=$(mktemp -d /tmp/ctrdb.XXXXXX)
  printf '%s\n' 'version = 2' "root = \"$CTRD_DIR/root\"" "state = \"$CTRD_DIR/state\"" \
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]' \
    '[grpc]' "  address = \"$CTRD_DIR/sock\"" '[ttrpc]' "  address = \"$CTRD_DIR/sock.ttrpc\"" \
    '[debug]' "  address = \"$CTRD_DIR/debug.sock\"" >"$CTRD_DIR/config.toml"
  containerd --config "$CTRD_DIR/config.toml" >"$CTRD_DIR/log" 2>&1 </dev/null &
  CTRD_PID=$!
  local i
  for ((i = 0; i < 150; i++)); do
    ctr --address "$CTRD_DIR/sock" version >/dev/null 2>&1 && return 0
    kill -0 "$CTRD_PID" 2>/dev/null || break
    sleep 0.2
  done
  cat "$CTRD_DIR/log" >&2
  die "containerd did not start"
}
ctrd_stop() {
  [ -n "$CTRD_PID" ] && [ -n "$CTRD_DIR" ] || return 0
  kill "$CTRD_PID" 2>/dev/null || true
  wait "$CTRD_PID" 2>/dev/null || true
  # Snapshots still mounted under its root only.
  grep -o "$CTRD_DIR/[^ ]*" /proc/mounts | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf "$CTRD_DIR"
  CTRD_PID="" CTRD_DIR=""
}

# The compressed bytes of the layers above the base's in the OCI layout $1.
own_layer_bytes() {
  python3 -c '
import json, sys
def layers(d):
    index = json.load(open(d + "/index.json"))
    digest = index["manifests"][0]["digest"].split(":")[1]
    return json.load(open(d + "/blobs/sha256/" + digest))["layers"]
print(sum(l["size"] for l in layers(sys.argv[1])[len(layers(sys.argv[2])):]))
' "$1" "$BASE_LAYOUT"
}

section_compression() {
  local wheels="$WORK/comp-wheels" cache="$WORK/comp-cache" c i
  say "compression: downloading hello-api's wheels once"
  timed "$IMGBUILD" build -f "$SPEC" --output "oci:$WORK/comp-warm" --cache-dir "$wheels"
  registry_start
  for c in gzip zstd; do
    local spec="$WORK/comp-$c.toml" cpus=() walls=() pulls=() bytes
    write_spec "$spec" "$APP"
    echo "compression = \"$c\"" >>"$spec"
    say "compression: $c: $COLD_RUNS builds with the wheels cached and no layers"
    for ((i = 0; i < COLD_RUNS; i++)); do
      rm -rf "$cache" "$WORK/comp-$c"
      cp -a "$wheels" "$cache"
      rm -rf "$cache/meta/layers"
      timed "$IMGBUILD" build -f "$spec" --output "oci:$WORK/comp-$c" --cache-dir "$cache"
      cpus+=("$CPU_MS")
      walls+=("$ELAPSED_MS")
    done
    bytes=$(own_layer_bytes "$WORK/comp-$c")
    timed "$IMGBUILD" push -f "$spec" --tag "127.0.0.1:$REG_PORT/comp-$c:1" --cache-dir "$cache"
    say "compression: $c: $COLD_RUNS pulls (fetch + unpack) by a fresh containerd"
    for ((i = 0; i < COLD_RUNS; i++)); do
      ctrd_start
      TIMED_CPU=0 timed ctr --address "$CTRD_DIR/sock" images pull --plain-http "127.0.0.1:$REG_PORT/comp-$c:1"
      pulls+=("$ELAPSED_MS")
      ctrd_stop
    done
    result "compression $c: build CPU $(median "${cpus[@]}") ms (wall $(median "${walls[@]}") ms)," \
      "our layers $bytes bytes, ctr pull+unpack $(median "${pulls[@]}") ms (median of $COLD_RUNS)"
  done
  registry_stop
}

# --- sdist builds (issue 22) ---------------------------------------------------------------
section_sdist() {
  local app="$WORK/sdist-app" spec="$WORK/sdist-app.toml" cache="$WORK/sdist-cache" out="$WORK/sdist-out"
  say "sdist: hello-api plus pypika 0.48.9, docopt 0.6.2 and uuid 1.30 (sdists only), locked"
  mkdir -p "$app"
  (cd "$APP" && tar --exclude=uv.lock --exclude=requirements.txt -cf - .) | tar -xf - -C "$app"
  sed -i 's/^dependencies = \[/dependencies = [\n    "pypika==0.48.9", "docopt==0.6.2", "uuid==1.30",/' "$app/pyproject.toml"
  (cd "$app" && UV_PYTHON_DOWNLOADS=never uv lock --quiet --exclude-newer "$EXCLUDE_NEWER")
  sed -e "s|^source = .*|source = \"$app\"|" -e "s|^lockfile = .*|lockfile = \"$app/uv.lock\"|" "$SPEC" >"$spec"
  local with=() without=() i
  say "sdist: cold builds with and without the three sdists ($COLD_RUNS runs each)"
  for ((i = 1; i <= COLD_RUNS; i++)); do
    rm -rf "$cache" "$out"
    timed "$IMGBUILD" build -f "$spec" --output "oci:$out" --cache-dir "$cache"
    with+=("$ELAPSED_MS")
    rm -rf "$cache" "$out"
    timed "$IMGBUILD" build -f "$SPEC" --output "oci:$out" --cache-dir "$cache"
    without+=("$ELAPSED_MS")
  done
  local w wo
  w=$(median "${with[@]}")
  wo=$(median "${without[@]}")
  result "sdist cold: with three sdist-only packages ${w} ms [${with[*]}], hello-api alone ${wo} ms" \
    "[${without[*]}]: the sdist builds cost $((w - wo)) ms (for information; no goal)"
  rm -rf "$cache" "$out"
  timed "$IMGBUILD" build -f "$spec" --output "oci:$out" --cache-dir "$cache"
  local built
  TIMED_STDOUT=/dev/null timed "$IMGBUILD" build -v -f "$spec" --output "oci:$out" --cache-dir "$cache"
  built=$(tail -n 200 "$LOG" | grep -c ': built .* from ' || true)
  fast_runs "$WARM_RUNS" "" "$IMGBUILD" build -f "$spec" --output "oci:$out" --cache-dir "$cache"
  w=$MEDIAN_MS
  fast_runs "$WARM_RUNS" "" "$IMGBUILD" build -f "$SPEC" --output "oci:$WORK/sdist-out-plain" --cache-dir "$cache"
  result "sdist warm: with the sdists ${w} ms, hello-api alone ${MEDIAN_MS} ms; sdists built again" \
    "on the warm build: ${built} (goal 0: $(verdict "$built" "<=" 0))"
  rm -rf "$cache" "$out" "$WORK/sdist-out-plain"
}

# --- section: rebase (issue 25) -----------------------------------------------------------
# json_field FILE KEY : KEY of the JSON object printed into FILE before its last line.
json_field() {
  python3 - "$1" "$2" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
print(json.loads(text[: text.rindex("}") + 1])[sys.argv[2]])
PY
}

section_rebase() {
  if [ ! -f "$BASE_CXX/index.json" ]; then
    say "rebase: building the base with libstdc++ into $BASE_CXX"
    bash "$ROOT/scripts/build-base-image.sh" amd64 "$BASE_CXX" libstdc++6 >>"$LOG" 2>&1 ||
      die "building the libstdc++ base failed (see $LOG)"
  fi
  registry_start
  local host="127.0.0.1:$REG_PORT" json="$WORK/rebase.json"
  local rcache="$WORK/rebase-cache" pcache="$WORK/rebase-push-cache" spec="$WORK/rebase.toml" old="$WORK/rebase-old.toml"
  copy_to() { skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$1:latest" "docker://$host/$2" >>"$LOG" 2>&1 || die "skopeo copy of $1 failed (see $LOG)"; }
  copy_to "$BASE_LAYOUT" python:3.11
  copy_to "$BASE_LAYOUT" python:3.11-old
  sed -e "s|^base = .*|base = \"$host/python:3.11\"|" "$SPEC" >"$spec"
  sed -e "s|^base = .*|base = \"$host/python:3.11-old\"|" "$SPEC" >"$old"
  say "rebase: hello-api pushed on the Debian base as api:1 (rebased later) and full:1 (rebuilt later), each with its own cache"
  timed "$IMGBUILD" push -f "$spec" --tag "$host/api:1" --cache-dir "$rcache"
  timed "$IMGBUILD" push -f "$spec" --tag "$host/full:1" --cache-dir "$pcache"
  copy_to "$BASE_CXX" python:3.11
  # run_json OUT CMD... : CMD timed with its stdout in $json; OUT gets "ms bytes".
  run_json() {
    local out=$1
    shift
    : >"$json"
    TIMED_STDOUT="$json" timed "$@" --json
    printf -v "$out" '%s %s' "$ELAPSED_MS" "$(json_field "$json" bytes_uploaded)"
  }
  local cold_rebase cold_push warm_rebase warm_push
  say "rebase: the base's tag moved; the new base is in neither cache"
  run_json cold_rebase "$IMGBUILD" rebase "$host/api:1" --cache-dir "$rcache"
  run_json cold_push "$IMGBUILD" push -f "$spec" --tag "$host/full:1" --cache-dir "$pcache"
  say "rebase: back onto the old base, which both caches hold"
  run_json warm_rebase "$IMGBUILD" rebase "$host/api:1" --base "$host/python:3.11-old" --cache-dir "$rcache"
  run_json warm_push "$IMGBUILD" push -f "$old" --tag "$host/full:1" --cache-dir "$pcache"
  result "rebase, new base not cached: ${cold_rebase% *} ms, ${cold_rebase#* } B of image uploaded; rebuild and push" \
    "of the same change ${cold_push% *} ms, ${cold_push#* } B: $(ratio "${cold_rebase% *}" "${cold_push% *}")x"
  result "rebase, base cached: ${warm_rebase% *} ms, ${warm_rebase#* } B; rebuild and push ${warm_push% *} ms," \
    "${warm_push#* } B: $(ratio "${warm_rebase% *}" "${warm_push% *}")x (goal: under a second warm: $(verdict "${warm_rebase% *}" "<" 1000))"
  registry_stop
}

# --- main --------------------------------------------------------------------------------
say "work directory $WORK; load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
say "$("$IMGBUILD" --version); $(uv --version)$($HAVE_HYPERFINE && echo "; $(hyperfine --version)")"
prepare_app
for s in deps push-memory push startup deploy ci compression sdist watch rebase; do
  wants "$s" || continue
  case "$s" in
    deps) section_deps ;;
    push-memory) section_push_memory ;;
    push) section_push ;;
    startup) section_startup ;;
    deploy) section_deploy ;;
    ci) section_ci ;;
    compression) section_compression ;;
    sdist) section_sdist ;;
    watch) section_watch ;;
    rebase) section_rebase ;;
  esac
done

echo
echo "summary ($(date -u +%Y-%m-%dT%H:%MZ); load average now: $(cut -d' ' -f1-3 /proc/loadavg)):"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
