#!/usr/bin/env bash
# The main job on the example: push images/hello-api.toml to a registry, then pull it
# with podman, run it as its own non-root user, and ask it for /health.
#
#   scripts/example.sh                      a throwaway local registry on 127.0.0.1:5000
#   REGISTRY=ghcr.io/you scripts/example.sh  your registry, with your docker/podman login
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMGBUILD="$ROOT/target/release/imgbuild"
[ -x "$IMGBUILD" ] || { echo "error: $IMGBUILD is missing; run scripts/setup.sh first" >&2; exit 1; }

WORK=$(mktemp -d)
cleanup() {
  [ -n "${CONTAINER:-}" ] && podman --runtime runc rm -f "$CONTAINER" >/dev/null 2>&1 || true
  [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

TLS=()
if [ -z "${REGISTRY:-}" ]; then
  PORT=${PORT:-5000}
  cat > "$WORK/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
YAML
  docker-registry serve "$WORK/registry.yml" > "$WORK/registry.log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
  REGISTRY="127.0.0.1:$PORT"
  TLS=(--tls-verify=false)
fi

echo "==> imgbuild push (cold: empty registry)"
time "$IMGBUILD" push -f "$ROOT/images/hello-api.toml" --tag "$REGISTRY/hello-api:latest" --image-refs "$WORK/refs"
REF=$(tail -n 1 "$WORK/refs")

echo "==> imgbuild push again (nothing changed: nothing uploaded, same digest)"
time "$IMGBUILD" push -f "$ROOT/images/hello-api.toml" --tag "$REGISTRY/hello-api:latest"

echo "==> podman pull and run $REF"
podman --runtime runc pull -q "${TLS[@]}" "$REF" >/dev/null
CONTAINER=$(podman --runtime runc run -d --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 -p 127.0.0.1::8000 "$REF")
HOSTPORT=$(podman --runtime runc port "$CONTAINER" 8000/tcp | head -n 1)
for _ in $(seq 100); do curl -fs "http://$HOSTPORT/health" >/dev/null 2>&1 && break; sleep 0.2; done
echo "GET /health       -> $(curl -fsS "http://$HOSTPORT/health")"
echo "GET /items/42?q=x -> $(curl -fsS "http://$HOSTPORT/items/42?q=x")"
echo "running as uid    -> $(podman --runtime runc exec "$CONTAINER" id -u)"
