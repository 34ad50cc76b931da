//! The base image's Python, read from its files: never by running it, so a
//! build for another architecture works the same as a native one.
//!
//! Sources, in the order they are trusted: the interpreter found on the image's
//! PATH, its `_sysconfigdata_*.py` (version, SOABI, free-threading), the patch
//! version from `patchlevel.h` or the package database, the libc family from the
//! interpreter's ELF `PT_INTERP`, and the libc version from libc.so.6's banner or
//! the package database.

pub(crate) mod elf;
mod packages;
mod sysconfig;

use super::rootfs::{join, RootFs};
use elf::Elf;
use packages::{apk_version, dpkg_version, major_minor, patch_of};
use serde::{Deserialize, Serialize};
use sysconfig::{find_sysconfigdata, SysconfigVars};
use thiserror::Error;

/// The PATH a base image gets when its config sets none; the image config
/// owns the value (re-exported for the interpreter search and its callers).
pub use crate::image::config::DEFAULT_PATH;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonInfo {
    /// Absolute real path, e.g. /usr/bin/python3.11 or /usr/local/bin/python3.12.
    pub interpreter: String,
    pub version: (u32, u32, u32),
    /// `cp311`, or `cp313t` for a free-threaded build.
    pub abi_tag: String,
    /// e.g. `cpython-311-x86_64-linux-gnu`.
    pub soabi: String,
    pub free_threaded: bool,
    pub libc: Libc,
    /// The wheel-tag architecture: x86_64, aarch64, armv7l, i686, ppc64le, s390x, riscv64, ...
    pub arch: String,
    /// `/usr` or `/usr/local`: the directory above the interpreter's `bin`.
    pub prefix: String,
    /// PEP 668: the base's Python refuses installs outside a virtual environment.
    pub externally_managed: bool,
}

impl PythonInfo {
    /// `3.11`
    pub fn minor_version(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }

    /// `3.11.2`
    pub fn full_version(&self) -> String {
        format!("{}.{}.{}", self.version.0, self.version.1, self.version.2)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Libc {
    Glibc { major: u32, minor: u32 },
    Musl { major: u32, minor: u32 },
}

impl std::fmt::Display for Libc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Libc::Glibc { major, minor } => write!(f, "glibc {major}.{minor}"),
            Libc::Musl { major, minor } => write!(f, "musl {major}.{minor}"),
        }
    }
}

impl PythonInfo {
    /// For messages: `CPython 3.11.2 (cp311, glibc 2.36, aarch64)`.
    pub fn describe(&self) -> String {
        format!(
            "CPython {} ({}, {}, {})",
            self.full_version(),
            self.abi_tag,
            self.libc,
            self.arch
        )
    }
}

#[derive(Debug, Error)]
pub enum InterpreterError {
    #[error("the base image has no Python interpreter (looked for python3 and python3.X in PATH {path}); use a Python base image such as python:3.12-slim, or a distroless/Debian image with python3 installed")]
    NoPython { path: String },
    #[error("the base image's {interpreter} is not a python3.X binary and no {prefix}/lib/python3.X directory was found; use a base image with a standard CPython layout")]
    UnknownVersion { interpreter: String, prefix: String },
    #[error("could not find the patch version of Python {minor} in the base image (looked in {looked}); use a base image that ships patchlevel.h or a package database")]
    NoPatchVersion { minor: String, looked: String },
    #[error("`{file}` in the base image is malformed: {reason}")]
    Malformed { file: String, reason: String },
    #[error("could not tell whether the base image uses glibc or musl (no readable PT_INTERP in {interpreter}, no libc.so.6, no ld-musl); use a glibc or musl based image")]
    UnknownLibc { interpreter: String },
    #[error("could not find the {family} version in the base image (looked in {looked}); use a base image with a package database (dpkg or apk)")]
    NoLibcVersion {
        family: &'static str,
        looked: String,
    },
    #[error("could not tell the CPU architecture of the base image's {interpreter} (ELF machine {machine:#x}); use a base image for x86_64, aarch64, armv7l, i686, ppc64le, s390x or riscv64")]
    UnknownArch { interpreter: String, machine: u16 },
}

/// Finds the base image's Python. `env_path` is the `PATH` from the image
/// config's `Env`, if it sets one.
pub fn detect(rootfs: &RootFs, env_path: Option<&str>) -> Result<PythonInfo, InterpreterError> {
    let path_var = env_path.unwrap_or(DEFAULT_PATH);
    let real = find_interpreter(rootfs, path_var).ok_or_else(|| InterpreterError::NoPython {
        path: path_var.to_owned(),
    })?;
    let interpreter = format!("/{real}");
    let (bin_dir, exe_name) = real.rsplit_once('/').unwrap_or(("", real.as_str()));
    let prefix_rel = bin_dir.strip_suffix("/bin").unwrap_or("");
    let prefix = format!("/{prefix_rel}");
    let lib_root = join(prefix_rel, "lib");

    let (major_minor, lib_dir) = python_lib_dir(rootfs, &lib_root, exe_name).ok_or_else(|| {
        InterpreterError::UnknownVersion {
            interpreter: interpreter.clone(),
            prefix: prefix.clone(),
        }
    })?;
    let sysconfig = find_sysconfigdata(rootfs, &lib_dir)
        .map(|(file, text)| SysconfigVars::parse(&file, &text))
        .transpose()?;
    let (major, minor) = match sysconfig.as_ref().and_then(|s| s.version) {
        Some(v) => v,
        None => major_minor,
    };
    let free_threaded = sysconfig.as_ref().is_some_and(|s| s.gil_disabled)
        || sysconfig
            .as_ref()
            .and_then(|s| s.soabi.as_deref())
            .is_some_and(|soabi| soabi.starts_with(&format!("cpython-{major}{minor}t")))
        || lib_dir.ends_with('t');
    let minor_str = format!("{major}.{minor}");

    let elf = rootfs.read(&real).and_then(Elf::parse);
    let (libc_family, libc_path) = libc_family(rootfs, elf.as_ref(), &interpreter)?;
    let arch = match &elf {
        Some(e) => e.arch().ok_or_else(|| InterpreterError::UnknownArch {
            interpreter: interpreter.clone(),
            machine: e.machine,
        })?,
        None => arch_from_libc(rootfs, libc_path.as_deref())
            .or_else(|| {
                sysconfig
                    .as_ref()
                    .and_then(|s| s.multiarch.as_deref())
                    .and_then(arch_from_multiarch)
            })
            .ok_or(InterpreterError::UnknownArch {
                interpreter: interpreter.clone(),
                machine: 0,
            })?,
    };
    let libc = libc_version(rootfs, libc_family, libc_path.as_deref())?;
    let patch = patch_version(rootfs, prefix_rel, &minor_str, free_threaded)?;

    let t = if free_threaded { "t" } else { "" };
    let soabi = sysconfig
        .as_ref()
        .and_then(|s| s.soabi.clone())
        .unwrap_or_else(|| {
            format!(
                "cpython-{major}{minor}{t}-{arch}-linux-{}",
                libc_suffix(libc)
            )
        });
    Ok(PythonInfo {
        interpreter,
        version: (major, minor, patch),
        abi_tag: format!("cp{major}{minor}{t}"),
        soabi,
        free_threaded,
        libc,
        arch,
        prefix,
        externally_managed: rootfs.is_file(&format!("{lib_dir}/EXTERNALLY-MANAGED")),
    })
}

/// The first `python3` (or, failing that, the newest `python3.X`) on PATH,
/// as a resolved path without the leading `/`.
fn find_interpreter(rootfs: &RootFs, path_var: &str) -> Option<String> {
    let dirs: Vec<&str> = path_var.split(':').filter(|d| !d.is_empty()).collect();
    for dir in &dirs {
        let candidate = format!("{}/python3", dir.trim_end_matches('/'));
        if let Some(real) = rootfs.resolve(&candidate).filter(|r| rootfs.is_file(r)) {
            return Some(real);
        }
    }
    for dir in &dirs {
        let mut versioned: Vec<(u32, String)> = rootfs
            .list_dir(dir)
            .into_iter()
            .filter_map(|name| {
                let minor = name.strip_prefix("python3.")?;
                Some((minor.trim_end_matches('t').parse().ok()?, name))
            })
            .collect();
        versioned.sort();
        for (_, name) in versioned.into_iter().rev() {
            let candidate = format!("{}/{name}", dir.trim_end_matches('/'));
            if let Some(real) = rootfs.resolve(&candidate).filter(|r| rootfs.is_file(r)) {
                return Some(real);
            }
        }
    }
    None
}

/// `(3, 11)` and `usr/lib/python3.11` from the executable's name, or from the
/// only `lib/python3.X` directory when the executable is plainly `python3`.
fn python_lib_dir(rootfs: &RootFs, lib_root: &str, exe_name: &str) -> Option<((u32, u32), String)> {
    let from_name = exe_name
        .strip_prefix("python")
        .filter(|v| v.contains('.'))
        .map(str::to_owned);
    let dir_name = match from_name {
        Some(v) => format!("python{v}"),
        None => rootfs
            .list_dir(lib_root)
            .into_iter()
            .filter(|n| parse_minor(n).is_some())
            .max_by_key(|n| parse_minor(n))?,
    };
    let version = parse_minor(&dir_name)?;
    Some((version, join(lib_root, &dir_name)))
}

/// `python3.11` / `python3.13t` → (3, 11) / (3, 13).
fn parse_minor(name: &str) -> Option<(u32, u32)> {
    let v = name.strip_prefix("python")?;
    let v = v.strip_suffix('t').unwrap_or(v);
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LibcFamily {
    Glibc,
    Musl,
}

/// The family, from PT_INTERP when the interpreter is a dynamic ELF, else from
/// which loader the image ships; plus where libc.so.6 is when there is one.
fn libc_family(
    rootfs: &RootFs,
    elf: Option<&Elf>,
    interpreter: &str,
) -> Result<(LibcFamily, Option<String>), InterpreterError> {
    let glibc = find_named(rootfs, |n| n == "libc.so.6");
    let musl = find_named(rootfs, |n| n.starts_with("ld-musl-"));
    let from_interp = elf.and_then(|e| e.interp.as_deref()).and_then(|interp| {
        let name = interp.rsplit('/').next().unwrap_or(interp);
        if name.starts_with("ld-musl") {
            Some(LibcFamily::Musl)
        } else if name.starts_with("ld-linux")
            || name.starts_with("ld64.so")
            || name.starts_with("ld.so")
        {
            Some(LibcFamily::Glibc)
        } else {
            None
        }
    });
    let family = match (from_interp, &glibc, &musl) {
        (Some(f), _, _) => f,
        (None, Some(_), _) => LibcFamily::Glibc,
        (None, None, Some(_)) => LibcFamily::Musl,
        (None, None, None) => {
            return Err(InterpreterError::UnknownLibc {
                interpreter: interpreter.to_owned(),
            })
        }
    };
    let path = match family {
        LibcFamily::Glibc => glibc,
        LibcFamily::Musl => musl,
    };
    Ok((family, path))
}

/// The first file (symlinks included) whose name matches, preferring real
/// libraries under the usual library directories.
fn find_named(rootfs: &RootFs, wanted: impl Fn(&str) -> bool) -> Option<String> {
    rootfs
        .paths()
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or(p);
            wanted(name) && (p.starts_with("lib") || p.starts_with("usr/lib"))
        })
        .find(|p| rootfs.is_file(p))
        .map(str::to_owned)
}

fn libc_version(
    rootfs: &RootFs,
    family: LibcFamily,
    libc_path: Option<&str>,
) -> Result<Libc, InterpreterError> {
    match family {
        LibcFamily::Glibc => {
            let banner = libc_path
                .and_then(|p| rootfs.read(p))
                .and_then(glibc_banner_version);
            let found = banner
                .or_else(|| dpkg_version(rootfs, "libc6").and_then(|v| major_minor(&v)))
                .or_else(|| apk_version(rootfs, &["glibc"]).and_then(|v| major_minor(&v)));
            let (major, minor) = found.ok_or(InterpreterError::NoLibcVersion {
                family: "glibc",
                looked: "libc.so.6, var/lib/dpkg/status(.d) libc6, the apk glibc entry".into(),
            })?;
            Ok(Libc::Glibc { major, minor })
        }
        LibcFamily::Musl => {
            let (major, minor) = apk_version(rootfs, &["musl"])
                .and_then(|v| major_minor(&v))
                .ok_or(InterpreterError::NoLibcVersion {
                    family: "musl",
                    looked: "lib/apk/db/installed and usr/lib/apk/db/installed (package musl)"
                        .into(),
                })?;
            Ok(Libc::Musl { major, minor })
        }
    }
}

fn libc_suffix(libc: Libc) -> &'static str {
    match libc {
        Libc::Glibc { .. } => "gnu",
        Libc::Musl { .. } => "musl",
    }
}

/// "GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36."
fn glibc_banner_version(data: &[u8]) -> Option<(u32, u32)> {
    let needle = b"GNU C Library";
    let mut from = 0;
    while let Some(pos) = find_bytes(&data[from..], needle) {
        let start = from + pos;
        from = start + needle.len();
        let window = &data[start..data.len().min(start + 256)];
        let window = &window[..window.iter().position(|b| *b == 0).unwrap_or(window.len())];
        let text = String::from_utf8_lossy(window);
        if let Some(at) = text.find("release version ") {
            if let Some(v) = major_minor(&text[at + "release version ".len()..]) {
                return Some(v);
            }
        }
    }
    None
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn patch_version(
    rootfs: &RootFs,
    prefix_rel: &str,
    minor: &str,
    free_threaded: bool,
) -> Result<u32, InterpreterError> {
    let t = if free_threaded { "t" } else { "" };
    let headers = [
        format!(
            "{}/python{minor}{t}/patchlevel.h",
            join(prefix_rel, "include")
        ),
        format!("{}/python{minor}/patchlevel.h", join(prefix_rel, "include")),
    ];
    let from_header = headers.iter().find_map(|h| {
        let text = String::from_utf8_lossy(rootfs.read(h)?).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("PY_VERSION") && l.contains("#define"))?;
        let quoted = line.split('"').nth(1)?;
        patch_of(quoted, minor)
    });
    let found = from_header
        .or_else(|| {
            [
                format!("python{minor}-minimal"),
                format!("libpython{minor}-minimal"),
                format!("python{minor}"),
            ]
            .iter()
            .find_map(|p| dpkg_version(rootfs, p))
            .and_then(|v| patch_of(&v, minor))
        })
        .or_else(|| {
            let names = [
                format!("python-{minor}"),
                format!("python-{minor}-base"),
                format!("python{minor}"),
                "python3".to_owned(),
            ];
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            apk_version(rootfs, &names).and_then(|v| patch_of(&v, minor))
        });
    found.ok_or_else(|| InterpreterError::NoPatchVersion {
        minor: minor.to_owned(),
        looked: format!(
            "{}/python{minor}/patchlevel.h, the dpkg python{minor}-minimal entry, the apk python entry",
            join(prefix_rel, "include")
        ),
    })
}

fn arch_from_libc(rootfs: &RootFs, libc_path: Option<&str>) -> Option<String> {
    Elf::parse(rootfs.read(libc_path?)?)?.arch()
}

fn arch_from_multiarch(multiarch: &str) -> Option<String> {
    let cpu = multiarch.split('-').next()?;
    Some(
        match cpu {
            "x86_64" => "x86_64",
            "aarch64" => "aarch64",
            "arm" => "armv7l",
            "i386" | "i686" => "i686",
            "powerpc64le" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loongarch64" => "loongarch64",
            _ => return None,
        }
        .to_owned(),
    )
}

#[cfg(test)]
pub(crate) mod test_images {
    //! Minimal base-image layouts, as in-memory layers.
    use crate::python::rootfs::test_tar::{layer, Item, Item::*};
    use crate::python::rootfs::RootFs;

    /// A 64-bit little-endian shared object with a dynamic section naming
    /// `needed` and one RUNPATH.
    pub fn fake_so(needed: &[&str], runpath: Option<&str>) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut offsets = Vec::new();
        for n in needed.iter().copied().chain(runpath) {
            offsets.push(strtab.len() as u64);
            strtab.extend_from_slice(n.as_bytes());
            strtab.push(0);
        }
        let ehdr = 64u64;
        let phdrs = 2u64 * 56;
        let str_off = ehdr + phdrs;
        let dyn_off = str_off + strtab.len() as u64;
        let mut dynamic: Vec<(u64, u64)> = Vec::new();
        for (i, _) in needed.iter().enumerate() {
            dynamic.push((1, offsets[i]));
        }
        if runpath.is_some() {
            dynamic.push((29, offsets[needed.len()]));
        }
        // DT_STRTAB as an address: the PT_LOAD maps vaddr 0x1000 to offset 0.
        dynamic.push((5, 0x1000 + str_off));
        dynamic.push((0, 0));
        let dyn_size = dynamic.len() as u64 * 16;
        let total = dyn_off + dyn_size;
        let mut d = vec![0u8; 64];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[6] = 1;
        d[16..18].copy_from_slice(&3u16.to_le_bytes());
        d[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        d[32..40].copy_from_slice(&ehdr.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = |t: u32, off: u64, vaddr: u64, size: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&t.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[32..40].copy_from_slice(&size.to_le_bytes());
            p
        };
        d.extend(ph(1, 0, 0x1000, total));
        d.extend(ph(2, dyn_off, 0x1000 + dyn_off, dyn_size));
        d.extend(&strtab);
        for (t, v) in dynamic {
            d.extend(t.to_le_bytes());
            d.extend(v.to_le_bytes());
        }
        d
    }

    /// A 64-bit ELF header with one PT_INTERP program header.
    pub fn fake_elf64(machine: u16, little: bool, interp: &str) -> Vec<u8> {
        let mut d = vec![0u8; 64 + 56];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = if little { 1 } else { 2 };
        d[6] = 1;
        // The low `n` bytes of `v` at `off`, in the file's byte order.
        let put = |d: &mut Vec<u8>, off: usize, n: usize, v: u64| {
            let b = if little {
                v.to_le_bytes()[..n].to_vec()
            } else {
                v.to_be_bytes()[8 - n..].to_vec()
            };
            d[off..off + n].copy_from_slice(&b);
        };
        let put16 = |d: &mut Vec<u8>, off: usize, v: u16| put(d, off, 2, u64::from(v));
        let put32 = |d: &mut Vec<u8>, off: usize, v: u32| put(d, off, 4, u64::from(v));
        let put64 = |d: &mut Vec<u8>, off: usize, v: u64| put(d, off, 8, v);
        put16(&mut d, 16, 2);
        put16(&mut d, 18, machine);
        put64(&mut d, 32, 64);
        put16(&mut d, 54, 56);
        put16(&mut d, 56, 1);
        let interp_off = d.len() as u64;
        put32(&mut d, 64, 3);
        put64(&mut d, 64 + 8, interp_off);
        put64(&mut d, 64 + 32, interp.len() as u64 + 1);
        d.extend_from_slice(interp.as_bytes());
        d.push(0);
        d
    }

    pub fn sysconfigdata(version: &str, soabi: &str, multiarch: &str) -> String {
        format!(
            "# system configuration generated and used by the sysconfig module\nbuild_time_vars = {{'ABIFLAGS': '',\n 'CONFIG_ARGS': \"'--enable-shared' \"\n               \"'--with-lto'\",\n 'EXT_SUFFIX': '.{soabi}.so',\n 'MULTIARCH': '{multiarch}',\n 'Py_GIL_DISABLED': 0,\n 'SOABI': '{soabi}',\n 'VERSION': '{version}'}}\n"
        )
    }

    const GLIBC_BANNER: &[u8] =
        b"\x7fELF....\0GNU C Library\0GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36.\nCopyright\0";

    pub fn rootfs(layers: &[Vec<u8>]) -> RootFs {
        let mut fs = RootFs::new();
        for l in layers {
            fs.apply_layer(&l[..], &RootFs::python_relevant).unwrap();
        }
        fs
    }

    fn debian_base() -> Vec<u8> {
        let dpkg = "Package: base-files\nVersion: 12.4+deb12u5\n\nPackage: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\n";
        layer(&[
            Symlink("bin", "usr/bin"),
            Symlink("lib", "usr/lib"),
            File("usr/lib/x86_64-linux-gnu/libc.so.6", GLIBC_BANNER),
            File("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", b"ld"),
            File("var/lib/dpkg/status", dpkg.as_bytes()),
            File("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
        ])
    }

    /// docker.io/library/python:3.12-slim: Debian underneath, CPython in /usr/local.
    pub fn official_python_312() -> RootFs {
        let elf = fake_elf64(0x3e, true, "/lib64/ld-linux-x86-64.so.2");
        let sc = sysconfigdata("3.12", "cpython-312-x86_64-linux-gnu", "x86_64-linux-gnu");
        rootfs(&[
            debian_base(),
            layer(&[
                File("usr/local/bin/python3.12", &elf),
                Symlink("usr/local/bin/python3", "python3.12"),
                Symlink("usr/local/bin/python", "python3"),
                File(
                    "usr/local/lib/python3.12/_sysconfigdata__linux_x86_64-linux-gnu.py",
                    sc.as_bytes(),
                ),
                File(
                    "usr/local/include/python3.12/patchlevel.h",
                    b"/* Version as a string */\n#define PY_VERSION      \t\"3.12.10\"\n",
                ),
            ]),
        ])
    }

    /// debian:12 with `apt-get install python3`.
    pub fn debian_python3(extra: &[Item]) -> RootFs {
        let elf = fake_elf64(0x3e, true, "/lib64/ld-linux-x86-64.so.2");
        let sc = sysconfigdata("3.11", "cpython-311-x86_64-linux-gnu", "x86_64-linux-gnu");
        let dpkg = "Package: libc6\nVersion: 2.36-9+deb12u4\n\nPackage: python3.11-minimal\nVersion: 3.11.2-6+deb12u5\n";
        let items = vec![
            File("usr/bin/python3.11", &elf[..]),
            Symlink("usr/bin/python3", "python3.11"),
            File(
                "usr/lib/python3.11/_sysconfigdata__x86_64-linux-gnu.py",
                sc.as_bytes(),
            ),
            File(
                "usr/lib/python3.11/EXTERNALLY-MANAGED",
                b"[externally-managed]\n",
            ),
            File("var/lib/dpkg/status", dpkg.as_bytes()),
        ];
        rootfs(&[debian_base(), layer(&items), layer(extra)])
    }
}

#[cfg(test)]
mod tests {
    use super::test_images::*;
    use super::*;
    use crate::python::rootfs::test_tar::{layer, Item::*};

    #[test]
    fn official_python_image_is_read_from_usr_local() {
        let info = detect(&official_python_312(), Some("/usr/local/bin:/usr/bin:/bin")).unwrap();
        assert_eq!(
            info,
            PythonInfo {
                interpreter: "/usr/local/bin/python3.12".into(),
                version: (3, 12, 10),
                abi_tag: "cp312".into(),
                soabi: "cpython-312-x86_64-linux-gnu".into(),
                free_threaded: false,
                libc: Libc::Glibc {
                    major: 2,
                    minor: 36
                },
                arch: "x86_64".into(),
                prefix: "/usr/local".into(),
                externally_managed: false,
            }
        );
    }

    #[test]
    fn debian_python3_takes_its_patch_version_from_dpkg() {
        let info = detect(&debian_python3(&[]), None).unwrap();
        assert_eq!(info.interpreter, "/usr/bin/python3.11");
        assert_eq!(info.version, (3, 11, 2));
        assert_eq!(info.prefix, "/usr");
        assert!(info.externally_managed);
        assert_eq!(
            info.libc,
            Libc::Glibc {
                major: 2,
                minor: 36
            }
        );
    }

    #[test]
    fn a_whiteout_of_the_interpreter_leaves_no_python() {
        let fs = debian_python3(&[
            File("usr/bin/.wh.python3.11", b""),
            File("usr/bin/.wh.python3", b""),
        ]);
        let err = detect(&fs, None).unwrap_err();
        assert!(matches!(err, InterpreterError::NoPython { .. }));
        assert!(err.to_string().contains("no Python interpreter"), "{err}");
    }

    #[test]
    fn distroless_reads_dpkg_status_d_and_arm64_elf() {
        let elf = fake_elf64(0xb7, true, "/lib/ld-linux-aarch64.so.1");
        let sc = sysconfigdata("3.11", "cpython-311-aarch64-linux-gnu", "aarch64-linux-gnu");
        let fs = rootfs(&[layer(&[
            File(
                "var/lib/dpkg/status.d/libc6",
                b"Package: libc6\nVersion: 2.36-9+deb12u7\nArchitecture: arm64\n",
            ),
            File(
                "var/lib/dpkg/status.d/libc6.md5sums",
                b"abc  usr/lib/libc.so.6\n",
            ),
            File(
                "var/lib/dpkg/status.d/python3.11-minimal",
                b"Package: python3.11-minimal\nVersion: 3.11.2-6+deb12u6\n",
            ),
            // No banner in this libc: the dpkg record is the fallback.
            File("usr/lib/aarch64-linux-gnu/libc.so.6", b"\x7fELF"),
            File("usr/bin/python3.11", &elf),
            Symlink("usr/bin/python3", "python3.11"),
            File(
                "usr/lib/python3.11/_sysconfigdata__aarch64-linux-gnu.py",
                sc.as_bytes(),
            ),
            File("usr/lib/python3.11/EXTERNALLY-MANAGED", b""),
        ])]);
        let info = detect(
            &fs,
            Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        )
        .unwrap();
        assert_eq!(info.arch, "aarch64");
        assert_eq!(info.version, (3, 11, 2));
        assert_eq!(
            info.libc,
            Libc::Glibc {
                major: 2,
                minor: 36
            }
        );
        assert_eq!(info.soabi, "cpython-311-aarch64-linux-gnu");
        assert_eq!(
            info.describe(),
            "CPython 3.11.2 (cp311, glibc 2.36, aarch64)"
        );
    }

    #[test]
    fn musl_is_known_from_pt_interp_and_the_apk_database() {
        let elf = fake_elf64(0x3e, true, "/lib/ld-musl-x86_64.so.1");
        let sc = sysconfigdata("3.13", "cpython-313t-x86_64-linux-musl", "");
        let fs = rootfs(&[layer(&[
            File("lib/ld-musl-x86_64.so.1", b"\x7fELF"),
            File(
                "lib/apk/db/installed",
                b"C:Q1abc=\nP:musl\nV:1.2.5-r0\n\nP:busybox\nV:1.36.1-r29\n",
            ),
            File("usr/local/bin/python3.13t", &elf),
            Symlink("usr/local/bin/python3", "python3.13t"),
            File(
                "usr/local/lib/python3.13t/_sysconfigdata_t_linux_x86_64-linux-musl.py",
                sc.as_bytes(),
            ),
            File(
                "usr/local/include/python3.13t/patchlevel.h",
                b"#define PY_VERSION \"3.13.1\"\n",
            ),
        ])]);
        let info = detect(&fs, None).unwrap();
        assert_eq!(info.libc, Libc::Musl { major: 1, minor: 2 });
        assert!(info.free_threaded);
        assert_eq!(info.abi_tag, "cp313t");
        assert_eq!(info.version, (3, 13, 1));
    }

    /// Reads a real root filesystem tar named by IMGBUILD_ROOTFS_TAR, e.g. from
    /// `mmdebstrap --variant=minbase --include=python3 bookworm rootfs.tar`.
    #[test]
    #[ignore]
    fn detects_python_in_a_real_rootfs_tar() {
        let path =
            std::env::var("IMGBUILD_ROOTFS_TAR").expect("set IMGBUILD_ROOTFS_TAR to a rootfs tar");
        let mut fs = RootFs::new();
        fs.apply_layer(std::fs::File::open(path).unwrap(), &RootFs::python_relevant)
            .unwrap();
        let info = detect(&fs, None).unwrap();
        eprintln!("{info:#?}");
        assert_eq!(info.version.0, 3);
        assert!(info.version.2 > 0 || info.version.1 > 0);
        assert!(matches!(
            info.libc,
            Libc::Glibc { major: 2, .. } | Libc::Musl { major: 1, .. }
        ));
    }
}
