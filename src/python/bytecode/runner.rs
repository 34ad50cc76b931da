//! Running the base image's own interpreter on this machine: its files are
//! unpacked into a private cache directory (keyed by the base's layers), and
//! the interpreter is started in a sandbox over that tree ([`crate::sandbox`])
//! through the base's own dynamic loader with `--library-path`, under
//! qemu-user when the base is for another architecture. No daemon, no
//! privileges. The loader launch is kept where the tree is `/` too: the
//! library search is then the same in every sandbox, and so are the pycs.

use super::BytecodeError;
use crate::sandbox::{Limits, Mechanism, Policy, Sandbox, Scratch};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Bumped when the unpacked tree or the identity changes meaning (3: every
/// symlink resolves inside the tree, so trees whose links led out are redone).
const UNPACK_VERSION: u32 = 3;

/// What a compile may use: generous for any real package (numpy's 1,100
/// sources compile in seconds, and under qemu in a minute or two).
const COMPILE_LIMITS: Limits = Limits {
    memory: 8 << 30,
    scratch: 256 << 20,
    time: Duration::from_secs(30 * 60),
};

/// What an sdist build may use: compilers and test-heavy setup scripts take
/// longer and write more than a compile.
const BUILD_LIMITS: Limits = Limits {
    memory: 8 << 30,
    scratch: 2 << 30,
    time: Duration::from_secs(30 * 60),
};

/// How to start the interpreter: `[qemu?] loader --library-path DIRS python`,
/// the loader, libraries and python as paths in the image.
#[derive(Clone, Debug)]
struct Launch {
    qemu: Option<PathBuf>,
    loader: String,
    library_dirs: Vec<String>,
    python: String,
}

/// The base's interpreter, ready to start.
#[derive(Clone)]
pub struct Interpreter {
    launch: Launch,
    sandbox: Arc<Sandbox>,
    /// `cpython-311`: the infix of pyc names.
    pub cache_tag: String,
    /// sha256 over the interpreter binary and the standard library's sources:
    /// what a compiled pyc depends on besides its source and path.
    pub identity: String,
    /// The pyc magic number, in hex (`a70d0d0a`): fixed within a minor
    /// version of a final release, not between pre-releases.
    pub magic: String,
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
    /// Unpack the whole base, not only what the interpreter needs (an sdist
    /// build with C extensions needs the base's compiler and headers).
    pub whole: bool,
}

/// What probing an unpacked base found. A stamp from an older version that
/// lacks a field does not parse, so the base is probed again and the stamp
/// rewritten (about 20 ms, once).
#[derive(serde::Serialize, serde::Deserialize)]
struct Stamp {
    cache_tag: String,
    identity: String,
    magic: String,
    stdlib_lacks_pycs: bool,
}

/// Where [`Interpreter::prepare`] keeps the tree it unpacks from the layers
/// `layer_digests` (the whole base when `whole`) under `cache`, and its stamp
/// (what probing the interpreter found): `roots/<key>` and `roots/<key>.json`.
pub fn root_paths(cache: &Path, layer_digests: &[String], whole: bool) -> (PathBuf, PathBuf) {
    let mut h = Sha256::new();
    h.update(format!("unpack-v{UNPACK_VERSION}\n"));
    if whole {
        h.update(b"whole\n");
    }
    for d in layer_digests {
        h.update(d.as_bytes());
        h.update(b"\n");
    }
    let key = hex::encode(&h.finalize()[..16]);
    // Absolute: the interpreter runs in other directories.
    let cache = std::path::absolute(cache).unwrap_or_else(|_| cache.to_path_buf());
    let roots = cache.join("roots");
    (roots.join(&key), roots.join(format!("{key}.json")))
}

/// Whether `bytes` is a stamp [`Interpreter::prepare`] would read.
pub fn is_stamp(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Stamp>(bytes).is_ok()
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
        policy: Policy,
        layers: &mut LayerStreams,
    ) -> Result<Interpreter, BytecodeError> {
        let (root, stamp_path) = root_paths(cache, &target.layer_digests, target.whole);
        let roots = root.parent().expect("a root is in roots/").to_path_buf();
        let key = root
            .file_name()
            .expect("named")
            .to_string_lossy()
            .into_owned();
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
                target.whole,
            )?;
            let tmp = tmp.keep();
            if fs::rename(&tmp, &root).is_err() {
                // Another build unpacked the same base first: use theirs.
                let _ = super::unpack::remove_all(&tmp);
            }
        }
        let launch = launch(target, &root)?;
        let tools: Vec<PathBuf> = launch.qemu.iter().cloned().collect();
        let sandbox = Arc::new(Sandbox::new(&root, &tools, COMPILE_LIMITS, policy)?);
        if let Some(stamp) = fs::read(&stamp_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Stamp>(&b).ok())
        {
            let interp = Interpreter {
                launch,
                sandbox,
                cache_tag: stamp.cache_tag,
                identity: stamp.identity,
                magic: stamp.magic,
                root,
                stdlib_lacks_pycs: stamp.stdlib_lacks_pycs,
            };
            interp.check_slim(target).map_err(unpack_err)?;
            return Ok(interp);
        }
        let mut interp = Interpreter {
            launch,
            sandbox,
            cache_tag: String::new(),
            identity: String::new(),
            magic: String::new(),
            root,
            stdlib_lacks_pycs: false,
        };
        (interp.cache_tag, interp.magic) = interp.probe(target)?;
        interp.identity = identity(&interp.root, target).map_err(unpack_err)?;
        interp.stdlib_lacks_pycs =
            super::stdlib_lacks_pycs(&interp.root, &stdlib_dir(target), &interp.cache_tag);
        let stamp = Stamp {
            cache_tag: interp.cache_tag.clone(),
            identity: interp.identity.clone(),
            magic: interp.magic.clone(),
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

    /// A root fetched in part (`packed::install`) is probed once: should the
    /// interpreter not start in it, or start as another than its stamp says,
    /// the rest is unpacked before anything runs there. A marker beside the
    /// root keeps later builds from probing again.
    fn check_slim(&self, target: &Target) -> io::Result<()> {
        if !super::packed::rest_path(&self.root).exists() {
            return Ok(());
        }
        let checked = self.root.with_extension("slim-checked");
        if checked.exists() {
            return Ok(());
        }
        // What the compile driver imports, `os` included (from source before 3.11).
        match self.probe_after(target, "import os, _imp; ") {
            Ok((tag, magic)) if tag == self.cache_tag && magic == self.magic => {
                fs::write(&checked, b"")
            }
            _ => self.make_whole(),
        }
    }

    /// Unpacks what a root fetched in part lacks (nothing for any other):
    /// before the standard library is read or anything but a compile runs in it.
    pub fn make_whole(&self) -> io::Result<()> {
        super::packed::complete(&self.root)
    }

    /// How the interpreter is confined on this machine.
    pub fn sandbox(&self) -> Mechanism {
        self.sandbox.mechanism()
    }

    /// How long one run may take.
    pub fn time_limit(&self) -> Duration {
        self.sandbox.limits().time
    }

    /// How long one sdist build may take.
    pub fn build_time_limit(&self) -> Duration {
        BUILD_LIMITS.time
    }

    /// The interpreter in its sandbox, with a clean environment: only
    /// `PYTHONHASHSEED=0` and a UTF-8 locale, no site, no user site, no
    /// bytecode written for its own imports. The scratch directory lasts as
    /// long as the returned [`Scratch`].
    pub fn command(&self) -> Result<(Command, Scratch), BytecodeError> {
        let (cmd, scratch, _) = self.command_in(&self.sandbox, &[], &[])?;
        Ok((cmd, scratch))
    }

    /// The interpreter in a sandbox with a build's limits (more time, more
    /// scratch space), `inputs` readable and `env` added; also returns where
    /// the interpreter sees each input.
    pub fn build_command(
        &self,
        inputs: &[&Path],
        env: &[(&str, &str)],
    ) -> Result<(Command, Scratch, Vec<PathBuf>), BytecodeError> {
        let tools: Vec<PathBuf> = self.launch.qemu.iter().cloned().collect();
        let policy = match self.sandbox.mechanism() {
            Mechanism::None => Policy::Off,
            _ => Policy::Required,
        };
        let sandbox = Sandbox::new(&self.root, &tools, BUILD_LIMITS, policy)?;
        self.command_in(&sandbox, inputs, env)
    }

    fn command_in(
        &self,
        sb: &Sandbox,
        inputs: &[&Path],
        extra_env: &[(&str, &str)],
    ) -> Result<(Command, Scratch, Vec<PathBuf>), BytecodeError> {
        let mut env = vec![
            ("PYTHONHASHSEED", "0"),
            ("PYTHONUTF8", "1"),
            ("LC_ALL", "C.UTF-8"),
        ];
        env.extend_from_slice(extra_env);
        let l = &self.launch;
        let loader = sb.image_path(&l.loader);
        let (program, first) = match &l.qemu {
            Some(q) => (sb.tool_path(q), Some(loader)),
            None => (loader, None),
        };
        let (mut cmd, scratch, seen) = sb.command(&program, &env, inputs)?;
        let library_path: Vec<String> = l
            .library_dirs
            .iter()
            .map(|d| sb.image_path(d).display().to_string())
            .collect();
        cmd.args(first)
            .arg("--library-path")
            .arg(library_path.join(":"))
            .arg(sb.image_path(&l.python))
            .args(["-S", "-s", "-B"]);
        Ok((cmd, scratch, seen))
    }

    /// The cache tag and the pyc magic number (hex; empty if it cannot be read).
    fn probe(&self, target: &Target) -> Result<(String, String), BytecodeError> {
        // Frozen modules only, as the compile driver: on a base without
        // stdlib pycs, importing py_compile here compiled a dozen modules
        // from source (about 85 ms) on every fresh runner.
        self.probe_after(target, "")
    }

    /// [`Self::probe`] after the `imports` given (a statement, or nothing).
    fn probe_after(
        &self,
        target: &Target,
        imports: &str,
    ) -> Result<(String, String), BytecodeError> {
        let (mut cmd, _scratch) = self.command()?;
        let script = format!(
            "{imports}import sys, _frozen_importlib_external as e; print(sys.implementation.cache_tag, getattr(e, 'MAGIC_NUMBER', b'').hex())"
        );
        let out = cmd.args(["-c", &script]).stdin(Stdio::null()).output();
        let cannot_run = |reason: String| BytecodeError::CannotRun {
            base: target.base.to_owned(),
            interpreter: target.interpreter.to_owned(),
            reason,
        };
        let out = out.map_err(|e| cannot_run(e.to_string()))?;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut words = said.split_whitespace();
        let (tag, magic) = (
            words.next().unwrap_or_default().to_owned(),
            words.next().unwrap_or_default().to_owned(),
        );
        if !out.status.success() || tag.is_empty() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            return Err(cannot_run(
                last.map_or_else(|| out.status.to_string(), |l| l.trim().to_owned()),
            ));
        }
        Ok((tag, magic))
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

/// `[qemu?] loader --library-path DIRS python` for the tree at `root`.
fn launch(target: &Target, root: &Path) -> Result<Launch, BytecodeError> {
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
    let mut qemu = None;
    if let Some(q) = qemu_name(target.arch).filter(|q| !is_native(q)) {
        qemu = Some(find_qemu(q).ok_or_else(|| BytecodeError::NoQemu {
            base: target.base.to_owned(),
            arch: target.arch.to_owned(),
            qemu: format!("qemu-{q}"),
        })?);
    }
    let in_image = |p: &Path| -> String {
        let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        let rel = p.strip_prefix(&root).unwrap_or(p);
        format!("/{}", rel.display())
    };
    Ok(Launch {
        qemu,
        loader: in_image(&loader),
        library_dirs: library_dirs_in(root),
        python: in_image(&python),
    })
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

/// [`library_dirs`] of the unpacked tree that exist, as paths in the image.
fn library_dirs_in(root: &Path) -> Vec<String> {
    let list = |d: &str| -> Vec<String> {
        fs::read_dir(root.join(d))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    };
    library_dirs(&list)
        .into_iter()
        .filter(|d| root.join(d).is_dir())
        .map(|d| format!("/{d}"))
        .collect()
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
