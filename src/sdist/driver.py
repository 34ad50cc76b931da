# imgbuild's PEP 517 front end, run by the base image's own interpreter in
# imgbuild's sandbox (no network, the base read-only, only its scratch space
# writable). Standard library only, Python 3.9 and later.
#
#   python -S -s -B -c DRIVER SDIST ENV BACKEND BACKEND_PATH_JSON KNOWN_JSON
#
# Unpacks SDIST into $TMPDIR/build (a fixed path, so paths inside the wheel
# do not vary), puts the build environment ENV (the pinned build requirements,
# unpacked) on sys.path, and calls the backend's get_requires_for_build_wheel
# and build_wheel. On the saved stdout it writes one JSON line, then for a
# wheel its bytes: {"missing": [...]} when the backend asks for requirements
# that are neither in ENV nor in KNOWN (the host resolves them and runs again),
# or {"wheel": NAME, "size": N}. Everything the backend prints goes to stderr.
import importlib
import json
import os
import shutil
import sys
import tarfile
import zipfile


def safe_members(names):
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or ".." in parts:
            raise SystemExit("imgbuild: the sdist has a member outside its directory: %r" % name)


def unpack(sdist, dest):
    os.makedirs(dest)
    if sdist.endswith(".zip"):
        with zipfile.ZipFile(sdist) as z:
            safe_members(z.namelist())
            z.extractall(dest)
    else:
        with tarfile.open(sdist, "r:gz") as t:
            members = t.getmembers()
            safe_members(m.name for m in members)
            if hasattr(tarfile, "data_filter"):
                t.extractall(dest, filter="data")
            else:
                kept = [m for m in members if m.isfile() or m.isdir()]
                for m in kept:
                    m.mode = (m.mode | 0o644) & 0o755 if m.isfile() else 0o755
                t.extractall(dest, members=kept)
    entries = os.listdir(dest)
    if len(entries) == 1 and os.path.isdir(os.path.join(dest, entries[0])):
        return os.path.join(dest, entries[0])
    return dest


def requirement_name(req):
    name = ""
    for ch in req.strip():
        if ch.isalnum() or ch in "._-":
            name += ch
        else:
            break
    return name.lower().replace("_", "-").replace(".", "-")


def installed(name):
    from importlib import metadata

    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def main():
    sdist, env, backend_spec, backend_path, known = sys.argv[1:6]
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    os.umask(0o022)
    import site

    site.addsitedir(env)
    work = os.path.join(os.environ.get("TMPDIR", "/tmp"), "build")
    src = unpack(sdist, work)
    os.chdir(src)
    for p in reversed(json.loads(backend_path)):
        sys.path.insert(0, os.path.join(src, p))
    module, _, attrs = backend_spec.partition(":")
    backend = importlib.import_module(module.strip())
    for attr in filter(None, attrs.strip().split(".")):
        backend = getattr(backend, attr)
    hook = getattr(backend, "get_requires_for_build_wheel", None)
    requires = list(hook({})) if hook else []
    known = set(json.loads(known))
    missing = [
        r for r in requires if r not in known and not installed(requirement_name(r))
    ]
    if missing:
        out.write(json.dumps({"missing": missing}).encode() + b"\n")
        out.flush()
        return 3
    dist = os.path.join(os.environ.get("TMPDIR", "/tmp"), "dist")
    os.makedirs(dist)
    name = backend.build_wheel(dist, {}, None)
    path = os.path.join(dist, name)
    out.write(json.dumps({"wheel": name, "size": os.path.getsize(path)}).encode() + b"\n")
    with open(path, "rb") as f:
        shutil.copyfileobj(f, out)
    out.flush()
    return 0


sys.exit(main())
