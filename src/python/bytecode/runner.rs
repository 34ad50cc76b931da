//! Running the base image's own interpreter on this machine: its files are
//! unpacked into a private cache directory (keyed by the base's layers), and
//! the interpreter is started through the base's own dynamic loader with
//! `--library-path` into the unpacked tree, under qemu-user when the base is
//! for another architecture. No chroot, no daemon, no privileges.

use super::BytecodeError;
use sha2::{Digest as _, Sha256};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bumped when the unpacked tree or the identity changes meaning (3: every
/// symlink resolves inside the tree, so trees whose links led out are redone).
const UNPACK_VERSION: u32 = 3;

/// The base's interpreter, ready to start.
#[derive(Clone, Debug)]
pub struct Interpreter {
    /// Program and arguments before the interpreter's own: `[qemu?] loader --library-path DIRS python`.
    program: Vec<OsString>,
    /// `cpython-311`: the infix of pyc names.
    pub cache_tag: String,
    /// sha256 over the interpreter binary and the standard library's sources:
    /// what a compiled pyc depends on besides its source and path.
    pub identity: String,
    /// The unpacked tree (the base's `/`).
    pub root: PathBuf,
    /// Whether some standard library source has no pyc: worked out once per
    /// unpacked base, since walking the stdlib cost every warm build (a no-op
    /// push included) some 600 stat calls.
    pub stdlib_lacks_pycs: bool,
}

/// What is needed to unpack and start one base's interpreter.
pub struct Target<'a> {
    /// For messages: the base's name.
    pub base: &'a str,
    /// The base's layer digests, in order: the cache key.
    pub layer_digests: Vec<String>,
    /// Absolute path of the interpreter in the image (`/usr/bin/python3.11`).
    pub interpreter: &'a str,
    /// `/usr` or `/usr/local`.
    pub prefix: &'a str,
    /// `3.11`
    pub minor_version: String,
    /// The wheel-tag architecture of the base (`x86_64`, `aarch64`, ...).
    pub arch: &'a str,
}

/// What probing an unpacked base found. A stamp from an older version that
/// lacks a field does not parse, so the base is probed again and the stamp
/// rewritten (about 20 ms, once).
#[derive(serde::Serialize, serde::Deserialize)]
struct Stamp {
    cache_tag: String,
    identity: String,
    stdlib_lacks_pycs: bool,
}

/// Hands layer `i`'s uncompressed tar stream to a reader.
pub type LayerStreams<'a> = dyn FnMut(usize, &mut dyn FnMut(&mut dyn Read) -> io::Result<()>) -> Result<(), BytecodeError>
    + 'a;

impl Interpreter {
    /// Unpacks the base into `cache/roots/<key>` unless it is there already,
    /// and checks that its interpreter starts. `layers(i, f)` hands layer `i`'s
    /// tar stream to `f`.
    pub fn prepare(
        target: &Target,
        cache: &Path,
        layers: &mut LayerStreams,
    ) -> Result<Interpreter, BytecodeError> {
        let key = {
            let mut h = Sha256::new();
            h.update(format!("unpack-v{UNPACK_VERSION}\n"));
            for d in &target.layer_digests {
                h.update(d.as_bytes());
                h.update(b"\n");
            }
            hex::encode(&h.finalize()[..16])
        };
        // Absolute: the interpreter runs in other directories.
        let cache = std::path::absolute(cache).unwrap_or_else(|_| cache.to_path_buf());
        let roots = cache.join("roots");
        let root = roots.join(&key);
        let stamp_path = roots.join(format!("{key}.json"));
        let unpack_err = |source| BytecodeError::Unpack {
            base: target.base.to_owned(),
            dir: roots.display().to_string(),
            source,
        };
        fs::create_dir_all(&roots).map_err(unpack_err)?;
        if !root.is_dir() {
            let tmp = tempfile::Builder::new()
                .prefix(&format!(".{key}-"))
                .tempdir_in(&roots)
                .map_err(unpack_err)?;
            let stdlib = stdlib_dir(target);
            super::unpack::unpack(
                target.base,
                tmp.path(),
                target.interpreter.trim_start_matches('/'),
                &stdlib,
                target.layer_digests.len(),
                layers,
            )?;
            let tmp = tmp.keep();
            if fs::rename(&tmp, &root).is_err() {
                // Another build unpacked the same base first: use theirs.
                let _ = super::unpack::remove_all(&tmp);
            }
        }
        let program = program(target, &root)?;
        if let Some(stamp) = fs::read(&stamp_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Stamp>(&b).ok())
        {
            return Ok(Interpreter {
                program,
                cache_tag: stamp.cache_tag,
                identity: stamp.identity,
                root,
                stdlib_lacks_pycs: stamp.stdlib_lacks_pycs,
            });
        }
        let mut interp = Interpreter {
            program,
            cache_tag: String::new(),
            identity: String::new(),
            root,
            stdlib_lacks_pycs: false,
        };
        interp.cache_tag = interp.probe(target)?;
        interp.identity = identity(&interp.root, target).map_err(unpack_err)?;
        interp.stdlib_lacks_pycs =
            super::stdlib_lacks_pycs(&interp.root, &stdlib_dir(target), &interp.cache_tag);
        let stamp = Stamp {
            cache_tag: interp.cache_tag.clone(),
            identity: interp.identity.clone(),
            stdlib_lacks_pycs: interp.stdlib_lacks_pycs,
        };
        let tmp_stamp = roots.join(format!(".{key}.json.{}", std::process::id()));
        fs::write(
            &tmp_stamp,
            serde_json::to_vec(&stamp).expect("plain struct"),
        )
        .and_then(|()| fs::rename(&tmp_stamp, &stamp_path))
        .map_err(unpack_err)?;
        Ok(interp)
    }

    /// The interpreter with a clean environment: only `PYTHONHASHSEED=0`, no
    /// site, no user site, no bytecode written for its own imports.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..])
            .args(["-S", "-s", "-B"])
            .env_clear()
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONUTF8", "1")
            .env("LC_ALL", "C.UTF-8");
        cmd
    }

    fn probe(&self, target: &Target) -> Result<String, BytecodeError> {
        let out = self
            .command()
            // Frozen modules only, as the compile driver: on a base without
            // stdlib pycs, importing py_compile here compiled a dozen modules
            // from source (about 85 ms) on every fresh runner.
            .args(["-c", "import sys; print(sys.implementation.cache_tag)"])
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output();
        let cannot_run = |reason: String| BytecodeError::CannotRun {
            base: target.base.to_owned(),
            interpreter: target.interpreter.to_owned(),
            reason,
        };
        let out = out.map_err(|e| cannot_run(e.to_string()))?;
        let tag = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || tag.is_empty() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            return Err(cannot_run(
                last.map_or_else(|| out.status.to_string(), |l| l.trim().to_owned()),
            ));
        }
        Ok(tag)
    }
}

/// `usr/lib/python3.11`: the standard library, relative to the root.
fn stdlib_dir(target: &Target) -> String {
    format!(
        "{}/lib/python{}",
        target.prefix.trim_matches('/'),
        target.minor_version
    )
}

/// The start of an ELF file, where its program headers and PT_INTERP lie: the
/// interpreter is megabytes, and this runs on every build, warm ones included.
fn elf_head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(64 << 10)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

/// `[qemu?] loader --library-path DIRS python`, all inside `root`.
fn program(target: &Target, root: &Path) -> Result<Vec<OsString>, BytecodeError> {
    let python = inside(root, target.interpreter).ok_or_else(|| BytecodeError::CannotRun {
        base: target.base.to_owned(),
        interpreter: target.interpreter.to_owned(),
        reason: "it is missing from the unpacked base".into(),
    })?;
    let loader = elf_head(&python)
        .and_then(|elf| pt_interp(&elf))
        .and_then(|i| inside(root, &i))
        .or_else(|| find_loader(root))
        .ok_or_else(|| BytecodeError::NoLoader {
            base: target.base.to_owned(),
        })?;
    let mut program = Vec::new();
    if let Some(q) = qemu_name(target.arch).filter(|q| !is_native(q)) {
        let qemu = find_qemu(q).ok_or_else(|| BytecodeError::NoQemu {
            base: target.base.to_owned(),
            arch: target.arch.to_owned(),
            qemu: format!("qemu-{q}"),
        })?;
        program.push(qemu.into_os_string());
    }
    program.push(loader.into_os_string());
    program.push("--library-path".into());
    program.push(library_path(root).into());
    program.push(python.into_os_string());
    Ok(program)
}

/// `path` (absolute in the image) on disk, symlinks followed, if it stays inside `root`.
fn inside(root: &Path, path: &str) -> Option<PathBuf> {
    let real = root
        .join(path.trim_start_matches('/'))
        .canonicalize()
        .ok()?;
    let root = root.canonicalize().ok()?;
    (real.starts_with(&root) && real.is_file()).then_some(real)
}

/// The library directories of a Debian/Ubuntu (multiarch), Alpine or
/// python:* image, in the order the base's loader would search them, as
/// paths below the root; `list(dir)` names a directory's entries.
pub(super) fn library_dirs(list: &dyn Fn(&str) -> Vec<String>) -> Vec<String> {
    let mut dirs = Vec::new();
    for parent in ["lib", "usr/lib"] {
        let mut multiarch: Vec<String> = list(parent)
            .into_iter()
            .filter(|n| n.contains("-linux-"))
            .collect();
        multiarch.sort();
        dirs.extend(multiarch.into_iter().map(|m| format!("{parent}/{m}")));
    }
    dirs.extend(
        ["usr/local/lib", "lib", "usr/lib", "lib64", "usr/lib64"]
            .iter()
            .map(|d| d.to_string()),
    );
    dirs
}

/// [`library_dirs`] of the unpacked tree, as `--library-path` wants them.
fn library_path(root: &Path) -> String {
    let list = |d: &str| -> Vec<String> {
        fs::read_dir(root.join(d))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    };
    library_dirs(&list)
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.is_dir())
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// A dynamic loader found by name, when the interpreter's PT_INTERP was no help.
fn find_loader(root: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = ["lib", "lib64", "usr/lib", "usr/lib64"]
        .iter()
        .flat_map(|d| fs::read_dir(root.join(d)).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("ld-linux") || n.starts_with("ld-musl-") || n.starts_with("ld64.so")
            })
        })
        .collect();
    found.sort();
    found.into_iter().find(|p| p.is_file())
}

/// The ELF program interpreter (PT_INTERP) of a 32- or 64-bit ELF file.
pub(super) fn pt_interp(elf: &[u8]) -> Option<String> {
    crate::python::interpreter::elf::Elf::parse(elf)?.interp
}

/// qemu's name for a wheel-tag architecture.
pub fn qemu_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        "armv7l" | "armv6l" => "arm",
        "i686" | "i386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        _ => return None,
    })
}

fn is_native(qemu: &str) -> bool {
    let host = match std::env::consts::ARCH {
        "x86" => "i386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    host == qemu || (host == "x86_64" && qemu == "i386")
}

/// `qemu-ARCH` or `qemu-ARCH-static` on PATH, else Debian's binfmt helper.
fn find_qemu(q: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in [format!("qemu-{q}"), format!("qemu-{q}-static")] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(&name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let p = PathBuf::from(format!("/usr/libexec/qemu-binfmt/{q}-binfmt-P"));
    p.is_file().then_some(p)
}

/// sha256 over the interpreter binary and every standard-library file
/// (path and content), pycs and site-packages left out.
fn identity(root: &Path, target: &Target) -> io::Result<String> {
    let mut h = Sha256::new();
    let python = inside(root, target.interpreter)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, target.interpreter.to_owned()))?;
    h.update(b"python\0");
    h.update(Sha256::digest(fs::read(python)?));
    let stdlib = stdlib_dir(target);
    let mut files = Vec::new();
    walk(&root.join(&stdlib), "", &mut files)?;
    files.sort();
    for (rel, path) in files {
        h.update(rel.as_bytes());
        h.update(b"\0");
        h.update(Sha256::digest(fs::read(path)?));
    }
    Ok(hex::encode(h.finalize()))
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let ft = e.file_type()?;
        if ft.is_dir() {
            if !matches!(
                name.as_str(),
                "__pycache__" | "site-packages" | "dist-packages"
            ) {
                walk(&e.path(), &rel, out)?;
            }
        } else if ft.is_file() && !name.ends_with(".pyc") {
            out.push((rel, e.path()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pt_interp_is_read_from_64_bit_elf_headers() {
        // A 64-bit little-endian header, one PT_INTERP program header, the path.
        let interp = b"/lib64/ld-linux-x86-64.so.2\0";
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20] = 64; // e_phoff
        elf[0x36] = 56; // e_phentsize
        elf[0x38] = 1; // e_phnum
        elf[64] = 3; // p_type = PT_INTERP
        elf[64 + 8] = 120; // p_offset
        elf[64 + 0x20] = interp.len() as u8; // p_filesz
        elf.extend_from_slice(interp);
        assert_eq!(
            pt_interp(&elf).as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(pt_interp(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn foreign_architectures_need_qemu_and_native_ones_do_not() {
        let native = match std::env::consts::ARCH {
            "aarch64" => "aarch64",
            _ => "x86_64",
        };
        assert!(is_native(qemu_name(native).unwrap()));
        let foreign = if native == "x86_64" {
            "aarch64"
        } else {
            "x86_64"
        };
        assert!(!is_native(qemu_name(foreign).unwrap()));
        assert_eq!(qemu_name("armv7l"), Some("arm"));
        assert_eq!(qemu_name("sparc"), None);
    }
}
