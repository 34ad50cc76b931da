#!/usr/bin/env bash
# Real packaged ASGI servers from the package index, built as a new user would build
# them: for each, a tiny project (a pyproject.toml naming the server, `uv lock` with an
# upload cutoff), `imgbuild init` (whatever it writes, unedited), `imgbuild build`, then
# the image run with podman and asked for a page and for a first write. Long (tens of
# minutes, about 2 GB of wheels): run by hand, not in CI. docs/projects.md has the list
# and the figures of the last run.
#
#   scripts/real-servers.sh [NAME...]      all servers, or those named
#
# Environment:
#   EXCLUDE_NEWER   the lock's upload cutoff (default 2026-11-01T00:00:00Z)
#   IMGBUILD        the binary (default target/release/imgbuild, else target/debug)
#   BASE            an OCI layout directory to build on (default: the Debian bookworm
#                   Python 3.11 base with libstdc++6 that the tests build, in
#                   ~/.cache/imgbuild-tests, built here with build-base-image.sh if absent)
#   KEEP=1          keep the work directory (projects, images, logs)
#   COLD=1          build with an empty imgbuild cache of its own (IMGBUILD_CACHE_DIR in
#                   the work directory), so the build times include every download
#
# The package index is uv's and imgbuild's configured one (UV_DEFAULT_INDEX, uv.toml,
# pip.conf...): nothing here names a host. Each server runs with
# `podman run --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024`,
# published on 127.0.0.1 only, as built: no env but a secret its docs require, no
# volume, no edit to imgbuild.toml.
# "Served" is any HTTP answer to GET / within 240 s of the start; the first write is one
# request that makes the server store something (a project, a flow, a notebook...), and
# counts when it answers 2xx.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EXCLUDE_NEWER=${EXCLUDE_NEWER:-2026-11-01T00:00:00Z}
IMGBUILD=${IMGBUILD:-}
if [ -z "$IMGBUILD" ]; then
  for b in "$ROOT/target/release/imgbuild" "$ROOT/target/debug/imgbuild"; do
    [ -x "$b" ] && { IMGBUILD=$b; break; }
  done
fi
[ -x "${IMGBUILD:-}" ] || { echo "error: no imgbuild binary; run cargo build --release (or set IMGBUILD)" >&2; exit 1; }
command -v uv >/dev/null || { echo "error: uv is not on PATH; run scripts/setup.sh --tests" >&2; exit 1; }
command -v podman >/dev/null || { echo "error: podman is not installed; run scripts/setup.sh --tests" >&2; exit 1; }

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/imgbuild-tests
BASE_GIVEN=${BASE:-}
if [ -z "${BASE:-}" ]; then
  BASE=$CACHE/base-bookworm-amd64-libstdcpp6
  if [ ! -f "$BASE/index.json" ]; then
    BASE=$CACHE/real-servers-base
    [ -f "$BASE/index.json" ] || bash "$ROOT/scripts/build-base-image.sh" amd64 "$BASE" 'libstdc++6' ||
      { echo "error: could not build the base image into $BASE" >&2; exit 1; }
  fi
fi

# NAME | requirement | write probe | env | base packages. The probe is METHOD PATH BODY
# (JSON), a name for a write that needs a token first (MARIMO, DATASETTE, DSTACK), or -
# when the server has no write that needs no more than a secret; env is what the
# server's own docs require (a secret), as KEY=VALUE words; base packages are
# Debian packages a server runs besides Python (dstack runs git and ssh): its base is
# built with them (and libstdc++6) by build-base-image.sh, cached in the same directory.
# Each is a server published on the index that serves HTTP from its own console script
# (no app of the project's own).
SERVERS=(
  "datasette|datasette>=1.0a0|DATASETTE|DATASETTE_SECRET=real-servers-test-secret"
  "jupyverse|jupyverse[jupyterlab,noauth]|POST /api/contents {\"type\":\"notebook\",\"path\":\"\"}|"
  "phoenix|arize-phoenix|POST /v1/projects {\"name\":\"first\"}|"
  "prefect|prefect|POST /api/flows/ {\"name\":\"first\"}|"
  "mlflow|mlflow|POST /api/2.0/mlflow/experiments/create {\"name\":\"first\"}|"
  "marimo|marimo|MARIMO|"
  "chroma|chromadb<0.6|POST /api/v1/collections {\"name\":\"first\"}|"
  "dagster|dagster-webserver|POST /graphql {\"query\":\"mutation { setNuxSeen }\"}|"
  "litellm|litellm[proxy]|-|LITELLM_MASTER_KEY=sk-real-servers-test"
  "dstack|dstack[server]|DSTACK||git,openssh-client"
)

# Lower case: podman names an oci: image after its directory.
WORK=/tmp/real-servers-$$-$(date +%s)
mkdir -p "$WORK"
[ "${COLD:-0}" = 1 ] && export IMGBUILD_CACHE_DIR="$WORK/cache"
CONTAINER=""
cleanup() {
  [ -n "$CONTAINER" ] && podman --runtime runc rm -f "$CONTAINER" >/dev/null 2>&1
  [ "${KEEP:-0}" = 1 ] && echo "work directory kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# HTTP status of a request to the container (000 when nothing answered).
status() { # METHOD URL [BODY] [extra curl args...]
  local method=$1 url=$2 body=${3:-}
  shift 3 2>/dev/null || shift $#
  if [ -n "$body" ]; then
    curl -s -o "$WORK/last-body" -w '%{http_code}' --max-time 30 -X "$method" \
      -H 'Content-Type: application/json' --data "$body" "$@" "$url"
  else
    curl -s -o "$WORK/last-body" -w '%{http_code}' --max-time 30 -X "$method" "$@" "$url"
  fi
}

# The first write, by the probe's kind; prints the HTTP status, and "(failed)" after a 2xx
# whose body says it failed (marimo's {"success": false}, GraphQL's "errors").
write_probe() {
  local code
  code=$(write_request "$@")
  if [[ $code == 2* ]] && grep -qE '"success": *false|"errors"' "$WORK/last-body" 2>/dev/null; then
    code="$code (failed: $(head -c 120 "$WORK/last-body"))"
  fi
  echo "$code"
}

write_request() { # NAME PROBE HOSTPORT
  local name=$1 probe=$2 hp=$3
  case "$probe" in
    -) echo "-" ;;
    MARIMO)
      # The editor's skew-protection token is in its page; a new notebook in HOME.
      local token
      token=$(curl -s --max-time 30 "http://$hp/" | grep -o '"serverToken": *"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/')
      curl -s -o "$WORK/last-body" -w '%{http_code}' --max-time 30 -X POST \
        -H "Marimo-Server-Token: $token" \
        -F path=/home/app -F type=notebook -F name=first.py \
        "http://$hp/api/files/create" ;;
    DATASETTE)
      # Its write API (1.0 alphas): a token for the root actor, signed with the
      # DATASETTE_SECRET the container has, as its docs make one; a table in data.db.
      local token
      token=$(podman --runtime runc exec "$CONTAINER" datasette create-token root 2>/dev/null)
      status POST "http://$hp/data/-/create" '{"table":"first","rows":[{"id":1,"name":"first"}],"pk":"id"}' \
        -H "Authorization: Bearer $token" ;;
    DSTACK)
      # The admin token is printed once, at the first start.
      local token
      token=$(podman --runtime runc logs "$CONTAINER" 2>&1 | grep -o 'admin token is [0-9a-f-]*' | head -n 1 | awk '{print $4}')
      status POST "http://$hp/api/projects/create" '{"project_name":"first"}' -H "Authorization: Bearer $token" ;;
    *)
      local method path body
      read -r method path body <<<"$probe"
      status "$method" "http://$hp$path" "$body" ;;
  esac
}

RESULTS=()
run_one() { # NAME REQUIREMENT PROBE ENV BASE
  # Logs go beside the project, not in it: the project is the image's app layer.
  local name=$1 req=$2 probe=$3 env=$4 base=$5 dir="$WORK/$1" log="$WORK/logs/$1" t0 t1 wheels size port hp code write=""
  mkdir -p "$dir" "$log"
  cat > "$dir/pyproject.toml" <<TOML
[project]
name = "rs-$name"
version = "0.1.0"
requires-python = "==3.11.*"
dependencies = ["$req"]
TOML
  echo "==> $name ($req)"
  if ! (cd "$dir" && uv lock -q --exclude-newer "$EXCLUDE_NEWER") > "$log/lock.log" 2>&1; then
    RESULTS+=("$name|$req|lock failed: $(tail -n 1 "$log/lock.log")|||||"); return
  fi
  wheels=$(grep -c '^\[\[package\]\]' "$dir/uv.lock")
  (cd "$dir" && "$IMGBUILD" init --base "oci:$base:latest") > "$log/init.log" 2>&1 ||
    { RESULTS+=("$name|$req|init failed: $(tail -n 1 "$log/init.log")|$wheels||||"); return; }
  local command
  command=$(grep -E '^(cmd|app) = ' "$dir/imgbuild.toml" | head -n 1)
  port=$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$dir/imgbuild.toml")
  t0=$(date +%s)
  if ! (cd "$dir" && "$IMGBUILD" build --output "oci:$WORK/img-$name:latest") > "$log/build.log" 2>&1; then
    RESULTS+=("$name|$req|build failed: $(grep -m1 -i 'error' "$log/build.log" | cut -c1-200)|$wheels||||$command"); return
  fi
  t1=$(date +%s)
  size=$(du -sm "$WORK/img-$name" | cut -f1)
  local envs=() e
  for e in $env; do envs+=(-e "$e"); done
  CONTAINER=$(podman --runtime runc run -d --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "${envs[@]}" \
    -p "127.0.0.1::$port" \
    "oci:$WORK/img-$name:latest" 2> "$log/run.log")
  if [ -z "$CONTAINER" ]; then
    RESULTS+=("$name|$req|podman run failed: $(tail -n 1 "$log/run.log")|$wheels|$((t1 - t0))|$size||$command"); return
  fi
  hp=$(podman --runtime runc port "$CONTAINER" "$port/tcp" | head -n 1)
  code=000
  local started=$SECONDS
  while [ $((SECONDS - started)) -lt 240 ]; do
    code=$(status GET "http://$hp/" "")
    [ "$code" != 000 ] && break
    podman --runtime runc inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null | grep -q true || break
    sleep 2
  done
  local served=$((SECONDS - started))
  [ "$code" != 000 ] && write=$(write_probe "$name" "$probe" "$hp")
  podman --runtime runc logs "$CONTAINER" > "$log/container.log" 2>&1
  cp "$WORK/last-body" "$log/write-response" 2>/dev/null
  podman --runtime runc rm -f "$CONTAINER" >/dev/null 2>&1
  CONTAINER=""
  local verdict="GET / $code after ${served}s"
  if [ "$code" = 000 ]; then
    # The error that stopped it, else its last line.
    local why
    why=$(grep -E '^[A-Za-z_.]*(Error|Exception)\b' "$log/container.log" | tail -n 1)
    [ -n "$why" ] || why=$(grep -v '^\s*$' "$log/container.log" | tail -n 1)
    verdict="no HTTP: $(printf '%s' "$why" | cut -c1-200)"
  fi
  RESULTS+=("$name|$req|$verdict|$wheels|$((t1 - t0))|$size|${write:-}|$command${env:+ with env $env}${packages:+ on a base with $packages}")
  # podman keeps a copy of an oci: image it ran, named after its directory.
  podman --runtime runc rmi -f "localhost$WORK/img-$name:latest" >/dev/null 2>&1
  rm -rf "$WORK/img-$name"
}

NAMES=("$@")
for entry in "${SERVERS[@]}"; do
  IFS='|' read -r name req probe env packages <<<"$entry"
  base=$BASE
  if [ -n "$packages" ] && [ -z "${BASE_GIVEN:-}" ]; then
    base=$CACHE/real-servers-base-${packages//,/-}
    [ -f "$base/index.json" ] || bash "$ROOT/scripts/build-base-image.sh" amd64 "$base" "libstdc++6,$packages" >/dev/null ||
      { echo "error: could not build the base image into $base" >&2; exit 1; }
  fi
  if [ ${#NAMES[@]} -gt 0 ] && ! printf '%s\n' "${NAMES[@]}" | grep -qx "$name"; then continue; fi
  run_one "$name" "$req" "$probe" "$env" "$base"
  printf '%s\n' "${RESULTS[-1]}"
done

echo
echo "| server | requirement | served | packages locked | build (s) | OCI layout, compressed (MiB) | first write | command imgbuild init wrote |"
echo "|---|---|---|---|---|---|---|---|"
for r in "${RESULTS[@]}"; do
  IFS='|' read -r name req verdict wheels secs size write command <<<"$r"
  echo "| $name | \`$req\` | $verdict | $wheels | $secs | $size | ${write:-} | \`${command:-}\` |"
done
