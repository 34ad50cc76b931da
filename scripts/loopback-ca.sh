#!/usr/bin/env bash
# loopback-ca.sh DIR: a throwaway CA (DIR/ca.crt) and a server certificate for 127.0.0.1
# signed by it (DIR/server.crt, DIR/server.key), valid for 2 days, made by openssl for a
# TLS registry on loopback (scripts/bench.sh, scripts/ab-inner-loop.sh).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
cd "$1"
key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${key[@]}" -keyout ca.key -out ca.crt -days 2 -subj "/CN=imgbuild loopback CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
openssl req "${key[@]}" -keyout server.key -out server.csr -subj /CN=127.0.0.1
printf '%s\n' subjectAltName=IP:127.0.0.1 basicConstraints=CA:FALSE \
  keyUsage=critical,digitalSignature extendedKeyUsage=serverAuth >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile server.ext -out server.crt
