#!/usr/bin/env bash
# Build a small Debian Python base image from Debian packages and write it as an OCI
# image layout tagged `latest`: bookworm's Python 3.11 unless told otherwise.
#
#   [SUITE=S] [PYTHON=P] scripts/build-base-image.sh ARCH OUTDIR [PACKAGE,...]
#
#   ARCH    amd64 | arm64
#   SUITE   bullseye (3.9) | bookworm (3.11, the default) | trixie (3.13) | sid (3.14)
#   PYTHON  the Debian package of the interpreter: python3 (the default, the suite's own
#           Python, with /usr/bin/python3) or a versioned one such as python3.15 in sid
#
# Extra Debian packages (comma-separated, e.g. `libstdc++6`) are added to the image;
# the tests use that for a base whose native libraries differ.
#
# The Debian mirror is read from this machine's apt sources at run time (one-line
# *.list and deb822 *.sources), so no mirror host is written here: a suite the sources
# do not name is fetched from the URIs of the Debian release they do name (its
# -updates and -security lines too, except for sid, which has neither). arm64 is built under
# qemu-user-static through binfmt_misc. The layout is written by hand (one gzip layer,
# config, manifest, index) so its bytes depend only on the rootfs tar.
set -euo pipefail

usage() { echo "usage: [SUITE=bullseye|bookworm|trixie|sid] [PYTHON=python3|python3.X] $0 amd64|arm64 OUTDIR [PACKAGE,...]" >&2; exit 2; }
[ $# -eq 2 ] || [ $# -eq 3 ] || usage
ARCH=$1
OUTDIR=$2
EXTRA=${3:-}
SUITE=${SUITE:-bookworm}
PYTHON=${PYTHON:-python3}
INCLUDE=$PYTHON,netbase${EXTRA:+,$EXTRA}
case "$ARCH" in
  amd64) OCI_ARCH=amd64; VARIANT="" ;;
  arm64) OCI_ARCH=arm64; VARIANT=v8 ;;
  *) usage ;;
esac
case "$SUITE" in
  bullseye | bookworm | trixie | sid) ;;
  *) echo "error: SUITE=$SUITE is not one this script builds; use bullseye, bookworm, trixie or sid" >&2; exit 2 ;;
esac
case "$PYTHON" in
  python3 | python3.[0-9] | python3.[0-9][0-9]) ;;
  *) echo "error: PYTHON=$PYTHON is not a Debian Python package; use python3 or python3.X (e.g. python3.15)" >&2; exit 2 ;;
esac
# Fixed so two builds from the same packages give the same rootfs timestamps.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}

# Prints one `deb [signed-by=...] URI SUITE COMPONENTS` line per source of this machine
# for the Debian release $1 (its -updates and -security suites included), with $1 renamed
# to $SUITE, from both apt source formats; disabled files and stanzas are skipped. sid
# has no -updates or -security suite: those lines are left out for it.
apt_sources_for_suite() {
  local from=$1
  local files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  local f
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk -v from="$from" -v to="$SUITE" '
    function want(s) {
      if (s == from) return 1
      if (s != from "-updates" && s != from "-security") return 0
      return to != "sid"
    }
    function renamed(s) { return to substr(s, length(from) + 1) }
    function emit(types, uris, suites, comps, signed,   nt, nu, ns, t, u, s, i, j, k, opt) {
      if (enabled == "no") return
      nt = split(types, t, " "); nu = split(uris, u, " "); ns = split(suites, s, " ")
      opt = (signed != "" && signed !~ /BEGIN PGP/) ? "[signed-by=" signed "] " : ""
      for (i = 1; i <= nt; i++) if (t[i] == "deb")
        for (j = 1; j <= nu; j++) for (k = 1; k <= ns; k++)
          if (want(s[k])) print "deb " opt u[j] " " renamed(s[k]) " " comps
    }
    function flush() {
      if (types != "") emit(types, uris, suites, comps, signed)
      types = uris = suites = comps = signed = enabled = ""
    }
    FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
    /^[ \t]*#/ { next }
    deb822 && /^[ \t]*$/ { flush(); next }
    deb822 {
      key = tolower($1); sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
      if (key == "types") types = val
      else if (key == "uris") uris = val
      else if (key == "suites") suites = val
      else if (key == "components") comps = val
      else if (key == "signed-by") signed = val
      else if (key == "enabled") enabled = tolower(val)
      next
    }
    $1 == "deb" {
      i = 2; signed = ""
      if ($2 ~ /^\[/) {
        opts = ""
        while (i <= NF) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } i++ }
        if (match(opts, /signed-by=[^ \]]+/)) signed = substr(opts, RSTART + 10, RLENGTH - 10)
      }
      uri = $i; s = $(i + 1); comps = ""
      for (j = i + 2; j <= NF; j++) comps = comps (comps == "" ? "" : " ") $j
      if (want(s)) print "deb " (signed != "" ? "[signed-by=" signed "] " : "") uri " " renamed(s) " " comps
      signed = ""
    }
    END { flush() }
  ' "${files[@]}" | awk '!seen[$0]++'
}

# The suite's own lines if the machine has them, else those of a Debian release it has.
SOURCES=()
for from in "$SUITE" bookworm trixie bullseye forky sid; do
  mapfile -t SOURCES < <(apt_sources_for_suite "$from")
  [ ${#SOURCES[@]} -eq 0 ] || break
done
if [ ${#SOURCES[@]} -eq 0 ]; then
  echo "error: no Debian entry (bullseye, bookworm, trixie, forky or sid) in /etc/apt/sources.list" \
    "or /etc/apt/sources.list.d/; add a Debian source so the $SUITE base image can be built" >&2
  exit 1
fi
# sid's Release files carry a Valid-Until a week ahead: a mirror frozen at a date (a
# snapshot) serves them expired. The signatures are still checked. Only for sid, since
# mmdebstrap keeps apt options in the image (/etc/apt/apt.conf.d/99mmdebstrap).
APTOPTS=()
[ "$SUITE" = sid ] && APTOPTS+=(--aptopt='Acquire::Check-Valid-Until "false"')

if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
  # Foreign binaries run through qemu-user-static; binfmt_misc must be mounted and the
  # handler registered (a fresh container or VM often has neither).
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  qemu_name=qemu-aarch64
  if [ ! -e "/proc/sys/fs/binfmt_misc/$qemu_name" ]; then
    update-binfmts --enable "$qemu_name"
  fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgbuild-base.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# essential + python3 is the smallest set that runs python3; netbase gives
# /etc/services and /etc/protocols, which socket name look-ups read. Compiled wheels
# (uvloop, httptools, pydantic-core, watchfiles) need only libc6 and libgcc-s1, both
# already essential. The stdlib's __pycache__ is dropped to keep the layer small.
# shellcheck disable=SC2016 # the hooks' "$1" is expanded by mmdebstrap, not here
mmdebstrap \
  --quiet \
  --mode=root \
  --variant=essential \
  --arch="$ARCH" \
  --include="$INCLUDE" \
  --format=tar \
  --aptopt='Acquire::Languages "none"' \
  "${APTOPTS[@]}" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/ldconfig/aux-cache "$1"/var/log/*' \
  --customize-hook='find "$1"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +' \
  "$SUITE" "$WORK/rootfs.tar" "${SOURCES[@]}"

sha256() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

DIFF_ID=$(sha256 "$WORK/rootfs.tar")
gzip -n -6 <"$WORK/rootfs.tar" >"$WORK/layer.tar.gz"
rm "$WORK/rootfs.tar"
LAYER_DIGEST=$(sha256 "$WORK/layer.tar.gz")
LAYER_SIZE=$(size "$WORK/layer.tar.gz")

CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
VARIANT_JSON=""
[ -n "$VARIANT" ] && VARIANT_JSON=",\"variant\":\"$VARIANT\""

mkdir -p "$WORK/layout/blobs/sha256"
mv "$WORK/layer.tar.gz" "$WORK/layout/blobs/sha256/$LAYER_DIGEST"

printf '%s' "{\"architecture\":\"$OCI_ARCH\",\"config\":{\"Cmd\":[\"$PYTHON\"],\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"LANG=C.UTF-8\"]},\"created\":\"$CREATED\",\"history\":[{\"created\":\"$CREATED\",\"created_by\":\"mmdebstrap --variant=essential --include=$INCLUDE $SUITE\"}],\"os\":\"linux\",\"rootfs\":{\"diff_ids\":[\"sha256:$DIFF_ID\"],\"type\":\"layers\"}$VARIANT_JSON}" \
  >"$WORK/config.json"
CONFIG_DIGEST=$(sha256 "$WORK/config.json")
CONFIG_SIZE=$(size "$WORK/config.json")
mv "$WORK/config.json" "$WORK/layout/blobs/sha256/$CONFIG_DIGEST"

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$CONFIG_DIGEST\",\"size\":$CONFIG_SIZE},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$LAYER_DIGEST\",\"size\":$LAYER_SIZE}]}" \
  >"$WORK/manifest.json"
MANIFEST_DIGEST=$(sha256 "$WORK/manifest.json")
MANIFEST_SIZE=$(size "$WORK/manifest.json")
mv "$WORK/manifest.json" "$WORK/layout/blobs/sha256/$MANIFEST_DIGEST"

printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$WORK/layout/oci-layout"
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$MANIFEST_DIGEST\",\"size\":$MANIFEST_SIZE,\"annotations\":{\"org.opencontainers.image.ref.name\":\"latest\"},\"platform\":{\"architecture\":\"$OCI_ARCH\",\"os\":\"linux\"$VARIANT_JSON}}]}" \
  >"$WORK/layout/index.json"

# Replace OUTDIR whole, so a reader never sees a half-written layout.
mkdir -p "$(dirname "$OUTDIR")"
rm -rf "$OUTDIR.old"
[ -e "$OUTDIR" ] && mv "$OUTDIR" "$OUTDIR.old"
mv "$WORK/layout" "$OUTDIR"
rm -rf "$OUTDIR.old"
echo "built $ARCH base image: oci:$OUTDIR:latest (manifest sha256:$MANIFEST_DIGEST, layer $LAYER_SIZE bytes)"
