#!/usr/bin/env bash
# imgbuild as a Python wheel, tried as a new user would: build it with maturin (from the
# package index, through uvx), install it with `uv pip install` into a fresh venv, and run
# `imgbuild --version` and `imgbuild build` on the example from that venv. The image is then
# run with podman and must answer /health, and the digest must equal the one the cargo-built
# binary gives for the same inputs.
#
#   scripts/wheel.sh          a release wheel, as published (compiles everything in release)
#   scripts/wheel.sh --dev    the dev profile: reuses what `cargo test` compiled (CI uses this)
#   scripts/wheel.sh --musl   a static x86_64 binary (needs `rustup target add
#                             x86_64-unknown-linux-musl` and musl-gcc from musl-tools), tagged
#                             for both manylinux and musllinux: it runs on any x86_64 Linux
#
# The wheel is left in target/wheels/. The base image comes from the tests' cache
# (~/.cache/imgbuild-tests, or IMGBUILD_TEST_CACHE), built there first if missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

MATURIN='maturin>=1.9,<2'
EXCLUDE_NEWER=2026-11-01T00:00:00Z # as tests/support/uv.rs: the same versions every run
PROFILE=(--release)
TARGET=()
for arg in "$@"; do
  case "$arg" in
    --dev) PROFILE=() ;;
    --musl) TARGET=(--target x86_64-unknown-linux-musl --compatibility manylinux_2_5 musllinux_1_2) ;;
    *) echo "usage: scripts/wheel.sh [--dev] [--musl]" >&2 && exit 2 ;;
  esac
done
export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1

WORK=$(mktemp -d)
cleanup() {
  [ -n "${CONTAINER:-}" ] && podman --runtime runc rm -f -t 0 "$CONTAINER" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
step() { echo "==> $*"; }
fail() {
  echo "error: $*" >&2
  exit 1
}

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

MATURIN_ARGS=("${PROFILE[@]}" "${TARGET[@]}")
step "uvx maturin build ${MATURIN_ARGS[*]}"
START=$(date +%s)
rm -f "$TARGET_DIR"/wheels/imgbuild-"$VERSION"-*.whl
uvx --from "$MATURIN" maturin build "${MATURIN_ARGS[@]}" --quiet
WHEEL=$(ls "$TARGET_DIR"/wheels/imgbuild-"$VERSION"-py3-none-*.whl)
NAME=$(basename "$WHEEL")
case "$NAME" in
  imgbuild-"$VERSION"-py3-none-manylinux_*_x86_64.whl) ;;
  imgbuild-"$VERSION"-py3-none-manylinux1_x86_64.manylinux_2_5_x86_64.musllinux_1_2_x86_64.whl) ;;
  *) fail "unexpected wheel name $NAME" ;;
esac
step "built $NAME ($(du -k "$WHEEL" | cut -f1) KiB) in $(($(date +%s) - START)) s"

step "uv pip install into a fresh venv"
uv venv --quiet "$WORK/venv"
uv pip install --quiet --python "$WORK/venv/bin/python" "$WHEEL"
IMGBUILD="$WORK/venv/bin/imgbuild"
[ -x "$IMGBUILD" ] || fail "the wheel put no imgbuild into the venv's bin/"
GOT=$("$IMGBUILD" --version)
[ "$GOT" = "imgbuild $VERSION" ] || fail "imgbuild --version printed '$GOT', not 'imgbuild $VERSION'"
step "$IMGBUILD --version: $GOT"
# The README's quickest path, from this wheel instead of the index.
GOT=$(uvx --quiet --from "$WHEEL" imgbuild --version)
[ "$GOT" = "imgbuild $VERSION" ] || fail "uvx --from WHEEL imgbuild --version printed '$GOT'"
step "uvx --from $NAME imgbuild --version: $GOT"

# The Debian base from the tests' cache, built the way tests/support/base.rs builds it.
CACHE=${IMGBUILD_TEST_CACHE:-$HOME/.cache/imgbuild-tests}
BASE="$CACHE/base-bookworm-amd64"
HASH=$(sha256sum scripts/build-base-image.sh | cut -d' ' -f1)
mkdir -p "$CACHE"
flock "$CACHE/base-bookworm-amd64.lock" bash -c '
  if [ -f "$2/index.json" ] && [ "$(cat "$2.script-sha256" 2>/dev/null)" = "$3" ]; then exit 0; fi
  echo "==> building the amd64 base image into $2 (about a minute)"
  rm -f "$2.script-sha256"
  bash "$1" amd64 "$2"
  printf "%s" "$3" > "$2.script-sha256.tmp" && mv "$2.script-sha256.tmp" "$2.script-sha256"
' base "$ROOT/scripts/build-base-image.sh" "$BASE" "$HASH"

step "imgbuild build of the example (fixtures/hello-api, locked by uv) from the venv"
mkdir -p "$WORK/hello-api"
cp -r fixtures/hello-api/pyproject.toml fixtures/hello-api/hello_api "$WORK/hello-api/"
(cd "$WORK/hello-api" && uv lock --quiet --exclude-newer "$EXCLUDE_NEWER")
cat >"$WORK/imgbuild.toml" <<TOML
base = "oci:$BASE:latest"
source = "hello-api"
app = "hello_api.main:app"
TOML
NAME_TAG="localhost/imgbuild-wheel-check-$$:latest"
DIGEST=$(cd "$WORK" && "$IMGBUILD" build --output "docker-archive:image.tar:$NAME_TAG" --cache-dir cache | tail -n 1)
step "image $DIGEST"
if [ -x "$TARGET_DIR/debug/imgbuild" ]; then
  OTHER=$(cd "$WORK" && "$TARGET_DIR/debug/imgbuild" build --output oci:other --cache-dir cache | tail -n 1)
  [ "$OTHER" = "$DIGEST" ] || fail "the wheel's binary built $DIGEST, target/debug/imgbuild $OTHER"
  step "target/debug/imgbuild builds the same digest"
fi

step "podman run the image, GET /health"
podman --runtime runc load -q -i "$WORK/image.tar" >/dev/null
CONTAINER=$(podman --runtime runc run -d --pull=never --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  -p 127.0.0.1::8000 "$NAME_TAG")
HOSTPORT=$(podman --runtime runc port "$CONTAINER" 8000/tcp | head -n 1)
for _ in $(seq 150); do curl -fs "http://$HOSTPORT/health" >/dev/null 2>&1 && break; sleep 0.2; done
HEALTH=$(curl -fsS "http://$HOSTPORT/health") || {
  podman --runtime runc logs "$CONTAINER" >&2
  fail "the image built by the wheel's imgbuild does not answer /health"
}
podman --runtime runc rm -f -t 0 "$CONTAINER" >/dev/null 2>&1 && CONTAINER=""
podman --runtime runc rmi -f "$NAME_TAG" >/dev/null 2>&1 || true
step "GET /health -> $HEALTH"
echo "wheel: 1 passed, 0 failed"
