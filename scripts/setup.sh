#!/usr/bin/env bash
# Prepare a Debian 12 machine to build imgbuild and try the example, or to run its tests.
# Safe to run again: every step checks before it changes anything. Runs as root (or
# through sudo when it is there).
#
#   scripts/setup.sh          the example: what scripts/example.sh needs (podman, a local
#                             registry, mmdebstrap for the base image, uv), then the base
#                             image, the example's lock and a release build
#   scripts/setup.sh --tests  what the tests need (.ci/run): the example's packages plus the
#                             test tools (skopeo, umoci, qemu for arm64, containerd, Poetry,
#                             PDM, SBOM validators, ...); no base image or release build,
#                             the tests build and cache what they use. --deps-only is the
#                             same (its older name).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TESTS=false
case "${1:-}" in
  --tests | --deps-only) TESTS=true ;;
  "") ;;
  *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: run as root (or install sudo)" >&2; exit 1; }
  SUDO=sudo
fi
step() { echo "==> $*"; }

example() {
  # --- the example: base image, lockfile, release binary ---------------------------------
  BASE="$ROOT/.imgbuild/base-amd64"
  STAMP="$BASE.script-sha256"
  # libstdc++6 as python:*-slim has it: apps with C++ extensions (greenlet, so async
  # SQLAlchemy; numpy) need it, and the native-library check refuses them without it.
  BASE_PACKAGES=libstdc++6
  HASH="$(sha256sum "$ROOT/scripts/build-base-image.sh" | cut -d' ' -f1) $BASE_PACKAGES"
  if [ -f "$BASE/index.json" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$HASH" ]; then
    step "base image up to date: $BASE"
  else
    step "building the amd64 base image (Debian bookworm, Python 3.11, $BASE_PACKAGES) into $BASE (about a minute)"
    $SUDO bash "$ROOT/scripts/build-base-image.sh" amd64 "$BASE" "$BASE_PACKAGES"
    printf '%s' "$HASH" >"$STAMP"
  fi

  LOCKDIR="$ROOT/.imgbuild/hello-api"
  mkdir -p "$LOCKDIR"
  cp "$ROOT/fixtures/hello-api/pyproject.toml" "$LOCKDIR/pyproject.toml"
  step "locking fixtures/hello-api into $LOCKDIR/uv.lock"
  (cd "$LOCKDIR" && UV_PYTHON_DOWNLOADS=never uv lock --quiet --exclude-newer 2026-11-01T00:00:00Z)

  step "cargo build --release (several minutes on 2 cores; cargo shows its progress)"
  (cd "$ROOT" && cargo build --release)
  step "done: now run scripts/example.sh (push the example, run it, GET /health)"
}

# --- Debian packages -------------------------------------------------------------------
# The example: podman + runc run the image (uidmap, fuse-overlayfs, slirp4netns and
# catatonit are what podman needs on a minimal system); docker-registry is the throwaway
# registry scripts/example.sh pushes to; mmdebstrap builds the Debian base image (python3
# for its layout, gzip for its layer); curl asks the example for /health; python3-pip
# installs uv when it is missing.
PACKAGES=(
  podman runc uidmap fuse-overlayfs slirp4netns catatonit
  docker-registry ca-certificates
  mmdebstrap gzip python3 python3-pip curl
)
# The tests, on top: htpasswd (apache2-utils) and openssl make the local test registries;
# skopeo and umoci inspect images independently; qemu-user-static and binfmt-support run
# the arm64 base builds and images; util-linux gives flock for the test cache lock;
# containerd (with its ctr) is the runtime of Kubernetes nodes, which the deploy tests
# pull and run the pushed image with; systemd gives systemd-analyze, which checks the
# units `imgbuild manifests --format systemd` writes (nothing here starts systemd);
# hyperfine and time measure the benchmarks; git for the fixtures' repositories.
TEST_PACKAGES=(
  apache2-utils openssl skopeo umoci qemu-user-static binfmt-support
  util-linux git hyperfine time containerd systemd
)
$TESTS && PACKAGES+=("${TEST_PACKAGES[@]}")
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
else
  step "Debian packages already installed"
fi

# --- podman ----------------------------------------------------------------------------
# Inside containers and sandboxes the default rlimits podman asks for (nofile 1048576)
# are refused, and crun may be missing or unusable; runc with modest limits works
# everywhere we run. The test helpers pass the same flags explicitly.
CONF=/etc/containers/containers.conf.d/imgbuild.conf
WANT_CONF='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"'
if [ "$(cat "$CONF" 2>/dev/null)" != "$WANT_CONF" ]; then
  step "configuring podman ($CONF)"
  $SUDO mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$WANT_CONF" | $SUDO tee "$CONF" >/dev/null
fi
# overlay storage fails on some filesystems (e.g. overlay-on-overlay); fall back to vfs.
if ! $SUDO podman --runtime runc info >/dev/null 2>&1; then
  step "podman storage does not work with its default driver; switching to vfs"
  printf '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n' |
    $SUDO tee /etc/containers/storage.conf >/dev/null
  $SUDO podman --runtime runc system reset -f >/dev/null 2>&1 || true
  $SUDO podman --runtime runc info >/dev/null
fi
step "podman storage driver: $($SUDO podman --runtime runc info --format '{{.Store.GraphDriverName}}')"

# --- arm64 emulation (the tests' arm64 bases and images) ---------------------------------
if $TESTS; then
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    step "mounting binfmt_misc"
    $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
      echo "warning: cannot mount binfmt_misc; arm64 images will not run here" >&2
  fi
  if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    step "registering qemu-aarch64 with binfmt_misc"
    $SUDO update-binfmts --enable qemu-aarch64 ||
      echo "warning: cannot register qemu-aarch64; arm64 images will not run here" >&2
  fi
fi

# --- uv (makes lockfiles for the tests and the example) --------------------------------
# Pinned: imgbuild lays out a venv as this uv does (src/python/venv.rs, UV_VERSION_FIELD),
# and tests/wheel_install_vs_uv.rs compares the two byte for byte, pyvenv.cfg's `uv =` line
# included; a newer uv from the index would fail it for that line alone.
UV_VERSION=0.13.9
if ! uv --version 2>/dev/null | grep -q "^uv $UV_VERSION\b"; then
  step "installing uv $UV_VERSION with pip"
  # Debian's Python is externally managed (PEP 668); uv is a standalone binary.
  python3 -m pip install --quiet "uv==$UV_VERSION" 2>/dev/null ||
    $SUDO python3 -m pip install --quiet --break-system-packages "uv==$UV_VERSION"
  hash -r
  uv --version 2>/dev/null | grep -q "^uv $UV_VERSION\b" || {
    echo "error: uv $UV_VERSION was installed, but \`uv\` on PATH is $(command -v uv) ($(uv --version 2>&1)); put pip's first on PATH" >&2
    exit 1
  }
fi
step "$(uv --version)"

command -v cargo >/dev/null || {
  echo "error: cargo not found; install Rust 1.85 or newer (rustup) and run again" >&2
  exit 1
}

$TESTS || { example; exit 0; }

# --- the tests' tools ------------------------------------------------------------------
# maturin builds the imgbuild wheel (scripts/wheel.sh); uvx keeps it in uv's cache.
step "$(uvx --from 'maturin>=1.9,<2' maturin --version)"

# --- Poetry and PDM (tests/locks_e2e.rs locks a fixture with each at test time) --------
# Pinned, so the locks they write keep one format. PDM 2.29.4 breaks with hishel 2, which
# came out after it: hishel is held at the version PDM's own `locked` extra names.
POETRY_VERSION=2.5.1
PDM_VERSION=2.29.4
TOOL_BIN=$(uv tool dir --bin)
if ! "$TOOL_BIN/poetry" --version 2>/dev/null | grep -q "version $POETRY_VERSION)"; then
  step "installing poetry $POETRY_VERSION with uv"
  uv tool install --quiet --force "poetry==$POETRY_VERSION"
fi
if ! "$TOOL_BIN/pdm" --version 2>/dev/null | grep -q "version $PDM_VERSION\$"; then
  step "installing pdm $PDM_VERSION with uv"
  uv tool install --quiet --force "pdm==$PDM_VERSION" --with "hishel==1.4.0"
fi
step "$("$TOOL_BIN/poetry" --version), $("$TOOL_BIN/pdm" --version)"
# --- SBOM validators for the tests: pyspdxtools (spdx-tools), cyclonedx-python-lib -----
SBOM_TOOLS=${IMGBUILD_SBOM_TOOLS:-/opt/imgbuild-sbom-tools}
if ! [ -x "$SBOM_TOOLS/bin/pyspdxtools" ] ||
  ! "$SBOM_TOOLS/bin/python" -c 'import cyclonedx.validation.json' 2>/dev/null; then
  step "installing spdx-tools and cyclonedx-python-lib into $SBOM_TOOLS"
  $SUDO mkdir -p "$SBOM_TOOLS"
  $SUDO env UV_PYTHON_DOWNLOADS=never uv venv --quiet --allow-existing "$SBOM_TOOLS"
  $SUDO env VIRTUAL_ENV="$SBOM_TOOLS" uv pip install --quiet --python "$SBOM_TOOLS/bin/python" \
    'spdx-tools>=0.8' 'cyclonedx-python-lib[json-validation]>=8'
fi
# --- Python tools the deploy tests and benchmarks run ----------------------------------
# kubernetes-validate checks generated manifests offline against bundled schemas; locust
# drives `scripts/bench.sh deploy`; podman-compose runs the compose.yaml that
# `imgbuild manifests --format compose` writes (tests/single_server_e2e.rs). Each lives in
# its own uv-managed venv under /opt, with its command in /usr/local/bin; the index comes
# from the user's uv/pip configuration.
for tool in kubernetes-validate locust podman-compose; do
  if ! command -v "$tool" >/dev/null; then
    step "installing $tool (uv tool, /opt/imgbuild-tools)"
    $SUDO env UV_TOOL_DIR=/opt/imgbuild-tools UV_TOOL_BIN_DIR=/usr/local/bin \
      UV_PYTHON_DOWNLOADS=never uv tool install --quiet "$tool"
  fi
done
step "test tools installed; run .ci/run (or cargo test --lib for the fast tier)"
