#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/corpus/<target>/ (run from the repo root).

The seeds are small, valid inputs that reach deep into each parser; the fuzzer
mutates them. Only loopback and .example hosts appear in them.
"""
import gzip, hashlib, base64, io, os, struct, sys, tarfile, zipfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
H = lambda c: c * 64


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- reference
for i, r in enumerate([
    "python:3.12-slim",
    "127.0.0.1:5000/team/app:1.0",
    "localhost/a/b/c",
    "127.0.0.1:5000/app@sha256:" + H("a"),
    "registry.example:443/Org/img:tag@sha256:" + H("b"),
    "[::1]:5000/app:v1",
    "library/busybox:latest",
]):
    put("reference", f"r{i}", r)

# --- lock: first byte % 5 = uv, pylock, requirements, poetry, pdm; 0x80 = musl
UV = f'''version = 1
revision = 3
requires-python = ">=3.10"
resolution-markers = ["python_full_version >= '3.12'", "python_full_version < '3.12'"]

[[package]]
name = "app"
version = "0.1.0"
source = {{ virtual = "." }}
dependencies = [
    {{ name = "fastapi" }},
    {{ name = "uvicorn", extra = ["standard"] }},
    {{ name = "numpy", version = "2.3.0", source = {{ registry = "http://127.0.0.1/simple" }}, marker = "python_full_version >= '3.12'" }},
    {{ name = "lib" }},
]

[package.optional-dependencies]
extra = [{{ name = "pyyaml" }}]

[package.dev-dependencies]
dev = [{{ name = "pytest" }}]

[[package]]
name = "lib"
version = "0.2.0"
source = {{ editable = "libs/lib" }}
dependencies = [{{ name = "idna" }}]
'''
for name, ver, deps, tag in [
    ("fastapi", "0.115.0", '{ name = "starlette" }', "py3-none-any"),
    ("starlette", "0.40.0", "", "py3-none-any"),
    ("uvicorn", "0.30.0", "", "py3-none-any"),
    ("numpy", "2.3.0", "", "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64"),
    ("idna", "3.10", "", "py3-none-any"),
    ("pyyaml", "6.0.2", "", "cp312-cp312-musllinux_1_1_x86_64"),
    ("pytest", "8.0.0", "", "py3-none-any"),
]:
    UV += f'''
[[package]]
name = "{name}"
version = "{ver}"
source = {{ registry = "http://127.0.0.1/simple" }}
dependencies = [{deps}]
sdist = {{ url = "http://127.0.0.1/f/{name}-{ver}.tar.gz", hash = "sha256:{H('0')}", size = 10 }}
wheels = [{{ url = "http://127.0.0.1/f/{name}-{ver}-{tag}.whl", hash = "sha256:{H('a')}", size = 100 }}]
'''
put("lock", "uv", b"\x00" + UV.encode())
put("lock", "uv-musl", b"\x80" + UV.encode())

PYLOCK = f'''lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.10"
extras = ["extra"]
dependency-groups = ["dev"]
default-groups = ["dev"]

[[packages]]
name = "app"
directory = {{ path = ".", editable = true }}

[[packages]]
name = "Typing_Extensions"
version = "4.12.0"
marker = "python_full_version < '3.15'"
wheels = [{{ url = "http://127.0.0.1/f/typing_extensions-4.12.0-py3-none-any.whl", size = 45571, hashes = {{ sha256 = "{H('a')}" }} }}]

[[packages]]
name = "pyyaml"
version = "6.0.2"
marker = "'extra' in extras"
sdist = {{ url = "http://127.0.0.1/f/pyyaml-6.0.2.tar.gz", hashes = {{ sha256 = "{H('b')}" }} }}
wheels = [{{ name = "pyyaml-6.0.2-cp312-cp312-manylinux_2_17_x86_64.whl", url = "http://127.0.0.1/download?id=7", hashes = {{ sha256 = "{H('b')}" }} }}]

[[packages]]
name = "pytest"
version = "8.0.0"
marker = "'dev' in dependency_groups"

[[packages.wheels]]
url = "http://127.0.0.1/f/pytest-8.0.0-py3-none-any.whl"
[packages.wheels.hashes]
sha256 = "{H('c')}"

[[packages]]
name = "lib"
version = "1.0"
archive = {{ url = "http://127.0.0.1/f/lib-1.0.tar.gz", hashes = {{ sha256 = "{H('d')}" }} }}
'''
put("lock", "pylock", b"\x01" + PYLOCK.encode())

REQ = f'''# uv pip compile --generate-hashes
--index-url http://127.0.0.1/simple
--extra-index-url http://127.0.0.1:8080/simple
anyio==4.4.0 \\
    --hash=sha256:{H('a')}
    # via starlette
fastapi==0.115.0 ; python_version >= "3.8" \\
    --hash=sha256:{H('a')} \\
    --hash=sha256:{H('b')}
Typing_Extensions[extra]==4.12.0 --hash=sha256:{H('a')}
pywin32==306 ; sys_platform == "win32" --hash=sha256:{H('c')}
demo @ http://127.0.0.1/f/demo-1.0-py3-none-any.whl#sha256={H('a')}
-e ./libs/lib
-r other.txt
'''
put("lock", "requirements", b"\x02" + REQ.encode())

POETRY = f'''[[package]]
name = "fastapi"
version = "0.115.0"
description = ""
optional = false
python-versions = ">=3.8"
groups = ["main"]
files = [
    {{file = "fastapi-0.115.0-py3-none-any.whl", hash = "sha256:{H('a')}"}},
    {{file = "fastapi-0.115.0.tar.gz", hash = "sha256:{H('b')}"}},
]

[package.dependencies]
starlette = ">=0.37.2"
pyyaml = {{version = ">=6", optional = true, markers = "sys_platform == 'linux'"}}

[package.extras]
all = ["pyyaml"]

[[package]]
name = "starlette"
version = "0.38.0"
description = ""
optional = false
python-versions = ">=3.8"
groups = ["main"]
files = [
    {{file = "starlette-0.38.0-py3-none-any.whl", hash = "sha256:{H('c')}"}},
]

[[package]]
name = "pyyaml"
version = "6.0.2"
optional = true
python-versions = ">=3.8"
groups = ["main"]
markers = "extra == \\"extra\\""
files = [
    {{file = "PyYAML-6.0.2-cp312-cp312-manylinux_2_17_x86_64.whl", hash = "sha256:{H('d')}"}},
]

[extras]
extra = ["pyyaml"]

[metadata]
lock-version = "2.1"
python-versions = ">=3.10"
content-hash = "{H('e')}"
'''
put("lock", "poetry", b"\x03" + POETRY.encode())

PDM = f'''# This file is @generated by PDM.
[metadata]
groups = ["default", "dev", "extra"]
strategy = ["inherit_metadata"]
lock_version = "4.5.0"
content_hash = "sha256:{H('e')}"

[[metadata.targets]]
requires_python = ">=3.10"

[[package]]
name = "fastapi"
version = "0.115.0"
requires_python = ">=3.8"
summary = ""
groups = ["default"]
dependencies = [
    "starlette<0.39.0,>=0.37.2",
    "typing-extensions>=4.8.0; python_version < \\"3.13\\"",
]
files = [
    {{file = "fastapi-0.115.0-py3-none-any.whl", hash = "sha256:{H('a')}"}},
]

[[package]]
name = "starlette"
version = "0.38.0"
groups = ["default"]
marker = "python_version >= \\"3.8\\""
files = [
    {{file = "starlette-0.38.0-py3-none-any.whl", hash = "sha256:{H('c')}"}},
]

[[package]]
name = "pytest"
version = "8.0.0"
groups = ["dev"]
files = [
    {{file = "pytest-8.0.0-py3-none-any.whl", hash = "sha256:{H('d')}"}},
]
'''
put("lock", "pdm", b"\x04" + PDM.encode())

# --- spec: first byte odd = pyproject [tool.imgbuild]
for root, _, files in os.walk(os.path.join(os.path.dirname(ROOT), "..", "fixtures")):
    for f in files:
        p = os.path.join(root, f)
        if f == "imgbuild.toml":
            put("spec", "fixture-" + os.path.basename(root) + "-imgbuild", b"\x00" + open(p, "rb").read())
        elif f == "pyproject.toml" and b"tool.imgbuild" in open(p, "rb").read():
            put("spec", "fixture-" + os.path.basename(root) + "-pyproject", b"\x01" + open(p, "rb").read())
SPEC = b'''base = "oci:base:3.12"
source = "."
workdir = "/app"
venv = "/app/.venv"
lockfile = "uv.lock"
app = "demo.main:app"
app-dir = "app/src"
port = 8000
workers = 2
proxy-headers = true
user = "1000:1000"
env = { APP_MODE = "prod" }
labels = { team = "payments" }
annotations = { "org.opencontainers.image.title" = "demo" }
platforms = ["linux/amd64", "linux/arm64/v8"]
cmd = ["--log-level", "info"]
groups = ["dev"]
extras = ["extra"]
include-dev = false
index-url = "http://127.0.0.1:3141/simple"
layer-budget = 100
revision = "4f2c1e9"
exclude = ["*.pyc", "!keep.pyc", "tests/"]
image = "127.0.0.1:5000/team/demo"
init = ["python", "-m", "demo.migrate"]
health = "/health"
allow-missing-libraries = ["libcuda.so.1"]
bytecode = "unchecked-hash"
bytecode-stdlib = true

[deploy]
replicas = 2
'''
put("spec", "full", b"\x00" + SPEC)
put("spec", "full-pyproject", b"\x01" + b"[project]\nname = \"demo\"\nversion = \"1.0\"\n\n[tool.imgbuild]\n" + SPEC.replace(b"[deploy]", b"[tool.imgbuild.deploy]"))

# --- www_authenticate
for i, v in enumerate([
    'Bearer realm="http://127.0.0.1:5000/token",service="127.0.0.1:5000",scope="repository:team/app:pull,push"',
    'Basic realm="Registry Realm"',
    'Basic realm="x, y", Bearer realm="https://auth.example/token",service=reg,error="invalid_token"',
    'Bearer realm="a\\"b", charset=UTF-8,  , token68==',
]):
    put("www_authenticate", f"c{i}", v)

# --- wheel_filename
for i, v in enumerate([
    "numpy-2.3.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "Typing_Extensions-4.12.0-py3-none-any.whl",
    "pyyaml-6.0.2-1build-cp312-cp312-musllinux_1_1_x86_64.whl",
    "orjson-3.10.0-cp312-abi3-manylinux_2_28_aarch64.whl",
    "six-1.16.0-py2.py3-none-any.whl",
    "x-1.0-cp313-cp313t-manylinux_2_39_x86_64.whl",
]):
    put("wheel_filename", f"w{i}", v)

# --- dist_info: first byte % 4 = METADATA, WHEEL, RECORD, entry_points.txt
METADATA = "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nSummary: a demo\n  continued\nRequires-Dist: idna\n\nbody text\n"
WHEEL = "Wheel-Version: 1.0\nGenerator: bdist_wheel (0.43.0)\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
ENTRY = "[console_scripts]\ndemo = demo.cli:main\ndemo-extra = demo.cli:main [extra]\n\n[gui_scripts]\ndemo-gui = demo.gui:run\n"


def rhash(b):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(b).digest()).decode().rstrip("=")


put("dist_info", "metadata", b"\x00" + METADATA.encode())
put("dist_info", "wheel", b"\x01" + WHEEL.encode())
put("dist_info", "record", b"\x02" + (
    f"demo/__init__.py,{rhash(b'x')},1\n"
    f"/demo/a,b.py,{rhash(b'')},0\n"
    '"demo/q""uote.py",sha256=abc,12\n'
    "demo-1.0.dist-info/RECORD,,\n").encode())
put("dist_info", "entry_points", b"\x03" + ENTRY.encode())

# --- dockerignore: patterns, NUL, paths
for root, _, files in os.walk(os.path.join(os.path.dirname(ROOT), "..", "fixtures")):
    if ".dockerignore" in files:
        put("dockerignore", "fixture-" + os.path.basename(root),
            open(os.path.join(root, ".dockerignore"), "rb").read() + b"\0a/b.py\n.git/HEAD\ndata/x\n")
put("dockerignore", "mixed", "\ufeff# comment\n*.pyc\n**/__pycache__\n!keep/*.pyc\n/build/\ndocs/**/*.md\n!docs/README.md\n[a-c]?.txt\n\\#lit\n\0"
    "a.pyc\nkeep/x.pyc\nsrc/__pycache__/m.pyc\nbuild/lib/x\ndocs/a/b/c.md\ndocs/README.md\nb1.txt\n#lit\n./a/../c\n")


# --- wheel: demo-1.0-py3-none-any.whl
def wheel_zip(extra=None, entry_points=True):
    files = {
        "demo/__init__.py": b"__version__ = '1.0'\n",
        "demo/cli.py": b"def main():\n    print('hi')\n",
        "demo-1.0.data/scripts/run": b"#!python\nprint('run')\n",
        "demo-1.0.data/data/share/demo.txt": b"data\n",
        "demo-1.0.data/headers/demo.h": b"/* h */\n",
        "demo-1.0.dist-info/METADATA": METADATA.encode(),
        "demo-1.0.dist-info/WHEEL": WHEEL.encode(),
    }
    if entry_points:
        files["demo-1.0.dist-info/entry_points.txt"] = ENTRY.encode()
    files.update(extra or {})
    record = "".join(f"{n},{rhash(b)},{len(b)}\n" for n, b in files.items())
    record += "demo-1.0.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, b in files.items():
            info = zipfile.ZipInfo(n, (2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if "scripts" in n else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, b)
        z.writestr(zipfile.ZipInfo("demo-1.0.dist-info/RECORD", (2020, 1, 1, 0, 0, 0)), record)
    return buf.getvalue()


put("wheel", "demo", wheel_zip())
put("wheel", "demo-plain", wheel_zip(entry_points=False))
put("wheel", "demo-pth", wheel_zip({"demo.pth": b"import demo\n", "demo/sub/x.so": b"\x7fELF"}))


# --- base_layer: a tar (or tar.gz) of a Debian-like Python
def elf64(machine, interp):
    d = bytearray(64 + 56)
    d[:4] = b"\x7fELF"; d[4] = 2; d[5] = 1; d[6] = 1
    struct.pack_into("<H", d, 16, 2); struct.pack_into("<H", d, 18, machine)
    struct.pack_into("<Q", d, 32, 64); struct.pack_into("<H", d, 54, 56); struct.pack_into("<H", d, 56, 1)
    off = len(d)
    struct.pack_into("<I", d, 64, 3); struct.pack_into("<Q", d, 72, off); struct.pack_into("<Q", d, 96, len(interp) + 1)
    return bytes(d) + interp.encode() + b"\0"


def sysconfig(version, soabi, multiarch):
    return ("# system configuration generated and used by the sysconfig module\nbuild_time_vars = {'ABIFLAGS': '',\n"
            f" 'EXT_SUFFIX': '.{soabi}.so',\n 'MULTIARCH': '{multiarch}',\n 'Py_GIL_DISABLED': 0,\n"
            f" 'SOABI': '{soabi}',\n 'VERSION': '{version}'}}\n")


def layer(items, gz=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for kind, path, val in items:
            ti = tarfile.TarInfo(path)
            if kind == "d":
                ti.type = tarfile.DIRTYPE; ti.mode = 0o755; t.addfile(ti)
            elif kind == "l":
                ti.type = tarfile.SYMTYPE; ti.linkname = val; ti.mode = 0o777; t.addfile(ti)
            elif kind == "h":
                ti.type = tarfile.LNKTYPE; ti.linkname = val; t.addfile(ti)
            else:
                ti.size = len(val); ti.mode = 0o755; t.addfile(ti, io.BytesIO(val))
    b = buf.getvalue()
    return gzip.compress(b, mtime=0) if gz else b


GLIBC = b"\x7fELF....\0GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36.\nCopyright\0"
DEBIAN = [
    ("l", "bin", "usr/bin"), ("l", "lib", "usr/lib"),
    ("f", "usr/lib/x86_64-linux-gnu/libc.so.6", GLIBC),
    ("f", "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", b"ld"),
    ("f", "var/lib/dpkg/status", b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\n\nPackage: python3.11-minimal\nVersion: 3.11.2-6\n"),
    ("f", "etc/os-release", b'ID=debian\nVERSION_ID="12"\n'),
]
OFFICIAL = DEBIAN + [
    ("f", "usr/local/bin/python3.12", elf64(0x3E, "/lib64/ld-linux-x86-64.so.2")),
    ("l", "usr/local/bin/python3", "python3.12"), ("l", "usr/local/bin/python", "python3"),
    ("f", "usr/local/lib/python3.12/_sysconfigdata__linux_x86_64-linux-gnu.py",
     sysconfig("3.12", "cpython-312-x86_64-linux-gnu", "x86_64-linux-gnu").encode()),
    ("f", "usr/local/include/python3.12/patchlevel.h", b'#define PY_VERSION      \t"3.12.10"\n'),
]
put("base_layer", "official-312", layer(OFFICIAL))
put("base_layer", "official-312-gz", layer(OFFICIAL, gz=True))
put("base_layer", "debian-311", layer(DEBIAN + [
    ("f", "usr/bin/python3.11", elf64(0x3E, "/lib64/ld-linux-x86-64.so.2")),
    ("l", "usr/bin/python3", "python3.11"),
    ("f", "usr/lib/python3.11/_sysconfigdata__x86_64-linux-gnu.py",
     sysconfig("3.11", "cpython-311-x86_64-linux-gnu", "x86_64-linux-gnu").encode()),
    ("f", "usr/lib/python3.11/EXTERNALLY-MANAGED", b"[externally-managed]\n"),
    ("d", "usr/lib/python3/dist-packages", None),
    ("f", "usr/lib/.wh.gone", b""),
    ("h", "usr/bin/python3.11-copy", "usr/bin/python3.11"),
]))
put("base_layer", "alpine-musl", layer([
    ("f", "lib/ld-musl-aarch64.so.1", b"\x7fELFmusl libc (aarch64)\0Version 1.2.5\0"),
    ("f", "lib/apk/db/installed", b"C:Q1abc=\nP:musl\nV:1.2.5-r0\n\nP:busybox\nV:1.36.1-r29\n"),
    ("f", "etc/os-release", b"ID=alpine\nVERSION_ID=3.20.0\n"),
    ("f", "usr/local/bin/python3.13", elf64(0xB7, "/lib/ld-musl-aarch64.so.1")),
    ("l", "usr/local/bin/python3", "python3.13"),
    ("f", "usr/local/lib/python3.13/_sysconfigdata__linux_aarch64-linux-musl.py",
     sysconfig("3.13", "cpython-313-aarch64-linux-musl", "aarch64-linux-musl").encode()),
    ("f", "usr/local/include/python3.13/patchlevel.h", b'#define PY_VERSION "3.13.1"\n'),
]))
print("seeds written under", ROOT)
