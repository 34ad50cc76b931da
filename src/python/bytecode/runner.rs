//! Running the base image's own interpreter on this machine: its files are
//! unpacked into a private cache directory (keyed by the base's layers), and
//! the interpreter is started through the base's own dynamic loader with
//! `--library-path` into the unpacked tree, under qemu-user when the base is
//! for another architecture. No chroot, no daemon, no privileges.

use super::BytecodeError;
use crate::python::rootfs::normalise;
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bumped when the unpacked tree or the identity changes meaning.
const UNPACK_VERSION: u32 = 1;

/// Parts of a base that no interpreter reads: left out to keep the cache small.
const SKIPPED: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
];

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

#[derive(serde::Serialize, serde::Deserialize)]
struct Stamp {
    cache_tag: String,
    identity: String,
}

/// A layer's uncompressed tar stream; `finish` is called after it has been read.
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
            for i in 0..target.layer_digests.len() {
                layers(i, &mut |tar| unpack_layer(tar, tmp.path()))?;
            }
            let tmp = tmp.keep();
            if fs::rename(&tmp, &root).is_err() {
                // Another build unpacked the same base first: use theirs.
                let _ = remove_all(&tmp);
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
            });
        }
        let mut interp = Interpreter {
            program,
            cache_tag: String::new(),
            identity: String::new(),
            root,
        };
        interp.cache_tag = interp.probe(target)?;
        interp.identity = identity(&interp.root, target).map_err(unpack_err)?;
        let stamp = Stamp {
            cache_tag: interp.cache_tag.clone(),
            identity: interp.identity.clone(),
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
            .args([
                "-c",
                "import sys, py_compile; print(sys.implementation.cache_tag)",
            ])
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

/// `[qemu?] loader --library-path DIRS python`, all inside `root`.
fn program(target: &Target, root: &Path) -> Result<Vec<OsString>, BytecodeError> {
    let python = inside(root, target.interpreter).ok_or_else(|| BytecodeError::CannotRun {
        base: target.base.to_owned(),
        interpreter: target.interpreter.to_owned(),
        reason: "it is missing from the unpacked base".into(),
    })?;
    let loader = fs::read(&python)
        .ok()
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
/// python:* image, in the order the base's loader would search them.
fn library_path(root: &Path) -> String {
    let mut dirs = Vec::new();
    for parent in ["lib", "usr/lib"] {
        let mut multiarch: Vec<String> = fs::read_dir(root.join(parent))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
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
    dirs.iter()
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
fn pt_interp(elf: &[u8]) -> Option<String> {
    if elf.get(..4)? != b"\x7fELF" {
        return None;
    }
    let wide = *elf.get(4)? == 2;
    let little = *elf.get(5)? == 1;
    let uint = |at: usize, len: usize| -> Option<u64> {
        let b = elf.get(at..at + len)?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if little { b[len - 1 - i] } else { b[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let (phoff, phentsize, phnum) = if wide {
        (uint(0x20, 8)?, uint(0x36, 2)?, uint(0x38, 2)?)
    } else {
        (uint(0x1c, 4)?, uint(0x2a, 2)?, uint(0x2c, 2)?)
    };
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        if uint(at, 4)? != 3 {
            continue;
        }
        let (offset, size) = if wide {
            (uint(at + 8, 8)?, uint(at + 0x20, 8)?)
        } else {
            (uint(at + 4, 4)?, uint(at + 0x10, 4)?)
        };
        let bytes = elf.get(offset as usize..(offset + size) as usize)?;
        let s = String::from_utf8_lossy(bytes);
        return Some(s.trim_end_matches('\0').to_owned());
    }
    None
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
    let stdlib = format!(
        "{}/lib/python{}",
        target.prefix.trim_matches('/'),
        target.minor_version
    );
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

/// Applies one layer's tar stream onto `root`, with OCI whiteouts. Absolute
/// symlinks are made relative so they resolve inside `root`; entries that
/// would land outside `root` are dropped.
pub fn unpack_layer(tar: &mut dyn Read, root: &Path) -> io::Result<()> {
    let real_root = root.canonicalize()?;
    let mut archive = tar::Archive::new(tar);
    let mut added: HashSet<String> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = normalise(&raw) else {
            continue;
        };
        if SKIPPED
            .iter()
            .any(|s| path == *s || path.starts_with(&format!("{s}/")))
        {
            continue;
        }
        let (dir, name) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path.as_str()),
        };
        let parent = root.join(dir);
        if !make_dirs_inside(&real_root, dir) {
            continue;
        }
        if name == ".wh..wh..opq" {
            for child in fs::read_dir(&parent)?.flatten() {
                let rel = format!("{dir}/{}", child.file_name().to_string_lossy());
                if !added.contains(&rel) {
                    remove_all(&child.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let _ = remove_all(&parent.join(hidden));
            continue;
        }
        let dest = parent.join(name);
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o777;
        match header.entry_type() {
            tar::EntryType::Directory => {
                let is_link = fs::symlink_metadata(&dest).is_ok_and(|m| m.is_symlink());
                if is_link && make_dirs_inside(&real_root, &path) {
                    // A directory over a symlink to one (inside the root) keeps the link.
                    continue;
                }
                if is_link || !dest.is_dir() {
                    let _ = remove_all(&dest);
                    fs::create_dir(&dest)?;
                }
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode | 0o700))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let target = match target.strip_prefix('/') {
                    Some(abs) => {
                        let depth = dir.split('/').filter(|c| !c.is_empty()).count();
                        format!("{}{}", "../".repeat(depth), abs)
                    }
                    None => target,
                };
                let _ = remove_all(&dest);
                std::os::unix::fs::symlink(target, &dest)?;
            }
            tar::EntryType::Link => {
                let Some(target) = entry
                    .link_name_bytes()
                    .and_then(|b| normalise(&String::from_utf8_lossy(&b)))
                else {
                    continue;
                };
                let source = root.join(target);
                if !source
                    .canonicalize()
                    .is_ok_and(|p| p.starts_with(&real_root))
                {
                    continue;
                }
                let _ = remove_all(&dest);
                if fs::hard_link(&source, &dest).is_err() {
                    fs::copy(&source, &dest)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let _ = remove_all(&dest);
                let mut file = fs::File::create(&dest)?;
                io::copy(&mut entry, &mut file)?;
                file.set_permissions(fs::Permissions::from_mode(mode | 0o600))?;
            }
            _ => continue,
        }
        added.insert(path);
    }
    Ok(())
}

/// Creates `dir` below `root` one component at a time, refusing to follow
/// a symlink out of `root` (so a hostile layer cannot create or write
/// anything outside it). True when `dir` exists inside `root`.
fn make_dirs_inside(real_root: &Path, dir: &str) -> bool {
    let mut here = real_root.to_path_buf();
    for c in dir.split('/').filter(|c| !c.is_empty()) {
        here.push(c);
        if fs::symlink_metadata(&here).is_err() && fs::create_dir(&here).is_err() {
            return false;
        }
        match here.canonicalize() {
            Ok(real) if real.starts_with(real_root) && real.is_dir() => here = real,
            _ => return false,
        }
    }
    true
}

/// Removes a file, symlink or directory tree; a missing path is fine.
fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // Directories unpacked read-only must be writable to be emptied.
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
            for child in fs::read_dir(path)? {
                remove_all(&child?.path())?;
            }
            fs::remove_dir(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::rootfs::test_tar::{layer, Item::*};

    #[test]
    fn layers_unpack_with_whiteouts_and_symlinks_made_relative() {
        let root = tempfile::tempdir().unwrap();
        let first = layer(&[
            File("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", b"ld"),
            Symlink(
                "lib64/ld-linux-x86-64.so.2",
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ),
            File("etc/gone", b"x"),
            File("opt/a/old", b"x"),
            File("usr/share/doc/pkg/README", b"docs"),
            Symlink("escape", "../../../../etc"),
            Symlink("away", "../../../../nonexistent-imgbuild-test-dir"),
        ]);
        let second = layer(&[
            File("etc/.wh.gone", b""),
            File("opt/a/.wh..wh..opq", b""),
            File("opt/a/new", b"y"),
            File("escape/passwd", b"evil"),
            File("away/sub/file", b"evil"),
        ]);
        for l in [first, second] {
            unpack_layer(&mut &l[..], root.path()).unwrap();
        }
        let r = root.path();
        assert_eq!(
            fs::read_link(r.join("lib64/ld-linux-x86-64.so.2")).unwrap(),
            PathBuf::from("../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        assert_eq!(
            fs::read(r.join("lib64/ld-linux-x86-64.so.2")).unwrap(),
            b"ld"
        );
        assert!(!r.join("etc/gone").exists());
        assert!(!r.join("opt/a/old").exists());
        assert_eq!(fs::read(r.join("opt/a/new")).unwrap(), b"y");
        assert!(!r.join("usr/share/doc").exists());
        assert!(!r.join("etc/passwd").exists());
        assert!(!Path::new("/nonexistent-imgbuild-test-dir").exists());
    }

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
