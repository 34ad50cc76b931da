#!/usr/bin/env python3
"""registry-floor.py: what a warm one-line push costs docker-registry alone.

Replays, against a fresh plain-http docker-registry on loopback, the requests a
warm `imgbuild push` with its SBOM and provenance sends (docs/benchmarks.md,
"The registry's floor"), with every body made beforehand, so the client spends
next to nothing. What it prints is the least any client could take on this
machine and registry for that protocol:

- the cost of each kind of request on its own (docker-registry's CPU from its
  /proc stat, and the wall time, one keep-alive connection);
- a warm push's requests in the waves the registry's checks impose (it accepts a
  manifest only once its blobs are there, and an index only once its manifests
  are): wave 0, the tag's GET and four upload sessions (a push opens them
  during its build); wave 1, the four blob PUTs and the fallback tag's HEAD;
  wave 2, the image manifest and the two artifact manifests; wave 3, the
  fallback index. The wall time of waves 1 to 3 comes after the build, so a
  push cannot take less than the build plus that.

Usage: scripts/registry-floor.py [ROUNDS]   (default 20; GOGC and the like
pass through to docker-registry from the environment)
"""

import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REPO = "floor"
PACKAGE_LAYERS = 23  # with the app layer, the 24 layers of hello-api's image
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, work):
        self.port = free_port()
        config = os.path.join(work, "registry.yml")
        with open(config, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {work}/storage\n"
                f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: floor\n"
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.log = open(os.path.join(work, "registry.log"), "w")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", config], env=env, stdout=self.log, stderr=self.log
        )
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("registry-floor: docker-registry did not start (see its log in %s)" % work)

    def cpu_ms(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * TICK_MS

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Client:
    """One keep-alive connection per thread, as a push's HTTP client keeps them."""

    def __init__(self, port):
        self.port = port
        self.conns = {}

    def request(self, method, path, body=None, headers=None):
        key = threading.get_ident()
        conn = self.conns.get(key)
        if conn is None:
            conn = self.conns[key] = http.client.HTTPConnection("127.0.0.1", self.port)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, r.getheader("Location"), data


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def descriptor(media_type, body, annotations=None):
    d = {"mediaType": media_type, "digest": digest(body), "size": len(body)}
    if annotations:
        d["annotations"] = annotations
    return d


def upload(client):
    status, location, _ = client.request("POST", f"/v2/{REPO}/blobs/uploads/")
    assert status == 202, status
    return location


def put_blob(client, location, body):
    sep = "&" if "?" in location else "?"
    status, _, data = client.request(
        "PUT", location + sep + "digest=" + digest(body), body,
        {"Content-Type": "application/octet-stream"},
    )
    assert status == 201, (status, data)


def put_manifest(client, ref, body, media_type):
    status, _, data = client.request(
        "PUT", f"/v2/{REPO}/manifests/{ref}", body, {"Content-Type": media_type}
    )
    assert status == 201, (status, data)


class Push:
    """The bodies of one warm push: a new app layer, config, image manifest,
    two attestation documents and their manifests, and the fallback index."""

    def __init__(self, n, package_layers, empty):
        rnd = random.Random(n)
        self.app = rnd.randbytes(4096)
        self.config = json.dumps({"architecture": "amd64", "os": "linux", "n": n}).encode()
        layers = [
            descriptor("application/vnd.oci.image.layer.v1.tar+gzip", b, {
                # about the size of the layer keys a push writes
                "dev.imgbuild.layer": json.dumps({"key": hashlib.sha256(b).hexdigest() * 4}),
            })
            for b in package_layers + [self.app]
        ]
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", self.config),
            "layers": layers,
        }).encode()
        subject = descriptor(OCI_MANIFEST, self.manifest)
        self.sbom = rnd.randbytes(40 << 10)
        self.provenance = rnd.randbytes(4 << 10)
        self.artifacts = [
            json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
                "config": descriptor("application/vnd.oci.empty.v1+json", empty),
                "layers": [descriptor(kind, doc)], "subject": subject,
            }).encode()
            for kind, doc in [("application/spdx+json", self.sbom),
                              ("application/vnd.in-toto+json", self.provenance)]
        ]
        self.index = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, a) for a in self.artifacts],
        }).encode()
        self.fallback_tag = subject["digest"].replace(":", "-")


def in_parallel(pool, calls):
    for f in [pool.submit(*c) for c in calls]:
        f.result()


def warm_push(pool, client, push):
    """Returns the wall time (ms) of wave 0, and of waves 1 to 3."""
    t0 = time.perf_counter()
    futures = [pool.submit(client.request, "GET", f"/v2/{REPO}/manifests/latest",
                           None, {"Accept": OCI_MANIFEST})]
    futures += [pool.submit(upload, client) for _ in range(4)]
    sessions = [f.result() for f in futures][1:]
    t1 = time.perf_counter()
    blobs = [push.app, push.config, push.sbom, push.provenance]
    in_parallel(pool, [(put_blob, client, s, b) for s, b in zip(sessions, blobs)]
                + [(client.request, "HEAD", f"/v2/{REPO}/manifests/{push.fallback_tag}")])
    in_parallel(pool, [(put_manifest, client, "latest", push.manifest, OCI_MANIFEST)]
                + [(put_manifest, client, digest(a), a, OCI_MANIFEST) for a in push.artifacts])
    put_manifest(client, push.fallback_tag, push.index, OCI_INDEX)
    t2 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def each_kind(reg, client, package_layers, empty):
    """Registry CPU and wall time of each kind of request, one at a time."""
    n = 30

    def blob_puts():
        sessions = [upload(client) for _ in range(n)]
        bodies = [os.urandom(4096) for _ in range(n)]
        return lambda i: put_blob(client, sessions[i], bodies[i])

    def manifest_puts():
        pushes = [Push(10_000 + i, package_layers, empty) for i in range(n)]
        for p in pushes:
            for b in [p.app, p.config]:
                put_blob(client, upload(client), b)
        return lambda i: put_manifest(client, f"t{i}", pushes[i].manifest, OCI_MANIFEST)

    kinds = [
        ("GET the tag's manifest", lambda: lambda i: client.request(
            "GET", f"/v2/{REPO}/manifests/latest", None, {"Accept": OCI_MANIFEST})),
        ("HEAD a missing tag", lambda: lambda i: client.request(
            "HEAD", f"/v2/{REPO}/manifests/sha256-{i:064x}")),
        ("POST an upload session", lambda: lambda i: upload(client)),
        ("PUT a 4 KiB blob into an open session", blob_puts),
        ("PUT the image manifest by tag", manifest_puts),
    ]
    print("each kind of request alone (%d each, one connection):" % n)
    for name, prepare in kinds:
        call = prepare()
        cpu, t = reg.cpu_ms(), time.perf_counter()
        for i in range(n):
            call(i)
        wall = (time.perf_counter() - t) * 1000 / n
        print(f"  {name:40s} docker-registry CPU {(reg.cpu_ms() - cpu) / n:5.2f} ms, wall {wall:5.2f} ms")


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    if not shutil.which("docker-registry"):
        sys.exit("registry-floor: no docker-registry on PATH (Debian: apt-get install docker-registry)")
    work = tempfile.mkdtemp(prefix="imgbuild-floor.")
    reg = Registry(work)
    try:
        client = Client(reg.port)
        empty = b"{}"
        package_layers = [os.urandom(4096) for _ in range(PACKAGE_LAYERS)]
        for b in package_layers + [empty]:
            put_blob(client, upload(client), b)
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            first = Push(0, package_layers, empty)
            for b in [first.app, first.config]:
                put_blob(client, upload(client), b)
            put_manifest(client, "latest", first.manifest, OCI_MANIFEST)
            each_kind(reg, client, package_layers, empty)
            waves0, after_build = [], []
            cpu = reg.cpu_ms()
            for n in range(1, rounds + 1):
                push = Push(n, package_layers, empty)
                time.sleep(0.2)
                w0, rest = warm_push(pool, client, push)
                waves0.append(w0)
                after_build.append(rest)
            cpu_per_push = (reg.cpu_ms() - cpu) / rounds
        med = statistics.median
        print(f"a warm push's 14 requests, {rounds} pushes (5 connections):")
        print(f"  docker-registry CPU per push: {cpu_per_push:.0f} ms")
        print(f"  wave 0 (tag GET, 4 upload sessions; during the build): median {med(waves0):.1f} ms")
        print(f"  waves 1 to 3 (after the build): median {med(after_build):.1f} ms "
              f"[{min(after_build):.1f}-{max(after_build):.1f}]")
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
