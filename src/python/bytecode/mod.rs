//! Deterministic bytecode: PEP 552 hash-based pycs compiled by the base
//! image's own interpreter (never the host's), added to the layer of the
//! package or app they belong to. The recipe and the measurements behind it
//! are in docs/reproducibility.md.
//!
//! - [`runner`]: start the base's interpreter here.
//! - [`unpack`]: unpack just what that interpreter needs.
//! - [`compile`]: one fresh interpreter per package, sorted files, final paths.
//! - this module: which files of a layer plan get pycs, and the glue to a base.

pub(crate) mod compile;
pub(crate) mod packed;
pub(crate) mod runner;
pub(crate) mod unpack;

use crate::layer::tar::ExternalContent;
use crate::layer::{Content, EntryKind, ImagePath, LayerPlan};
use crate::python::interpreter::PythonInfo;
use compile::{Failure, Source};
use runner::{Interpreter, Target};
use std::io;
use std::path::Path;

/// The `bytecode` setting: the settings own its type and parsing.
pub use crate::spec::BytecodeMode as Mode;

/// What bytecode needs from a base image: its name (for messages), its layer
/// digests in order (the unpack cache key) and each layer's tar stream. A
/// trait so this module stays below the code that reads images: `base`
/// implements it for its `BaseImage`.
pub trait BaseLayers {
    fn name(&self) -> &str;
    fn layer_digests(&self) -> Vec<String>;
    /// Hands layer `index`'s uncompressed tar to `read`; the error is the
    /// base's own (a failed pull or blob), or what `read` returned.
    fn read_layer(
        &self,
        index: usize,
        read: &mut dyn FnMut(&mut dyn io::Read) -> io::Result<()>,
    ) -> Result<(), BoxError>;
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BytecodeError {
    /// Reading the base's layers failed: the base's own error, as it is.
    #[error(transparent)]
    Base(BoxError),
    #[error("base {base}: unpacking its Python into {dir} for bytecode failed; check the cache directory's space and permissions")]
    Unpack {
        base: String,
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("base {base}: its Python cannot run here: no dynamic loader (ld-linux-*.so or ld-musl-*.so) in the base to start it with; set `bytecode = false` for this base")]
    NoLoader { base: String },
    #[error("base {base} is for {arch}: starting its Python here needs {qemu}; install it (Debian: apt-get install qemu-user-static) or set `bytecode = false`")]
    NoQemu {
        base: String,
        arch: String,
        qemu: String,
    },
    #[error("base {base}: its Python {interpreter} cannot run here ({reason}); install qemu-user-static if the base is for another architecture, or set `bytecode = false`")]
    CannotRun {
        base: String,
        interpreter: String,
        reason: String,
    },
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("base {base}: its Python {version} is newer than the CPython versions imgbuild compiles bytecode for ({} to {}); set `bytecode = false` to build without pycs, or use a base with one of those versions", fmt_version(OLDEST_TESTED), fmt_version(NEWEST_KNOWN))]
    UnknownPython { base: String, version: String },
    #[error("the base's Python {version} lacks what imgbuild compiles bytecode with ({reason}); set `bytecode = false` to build without pycs")]
    UnsupportedInternals { version: String, reason: String },
    #[error("compiling bytecode for {label}: the base's Python failed ({reason})")]
    Driver { label: String, reason: String },
    /// Reading a source, or the directory a compile runs in.
    #[error("compiling bytecode for {label}: {path}")]
    Stage {
        label: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{failure}: the app's own source does not compile, so the app would fail there; fix it, or set `bytecode = false`")]
    AppSyntax { failure: Failure },
    #[error("adding bytecode for {label}")]
    Plan {
        label: String,
        #[source]
        source: crate::layer::plan::PlanError,
    },
}

/// The newest CPython whose internals the compile driver was checked
/// against: a newer one may have moved them again (3.14 did), so it is
/// refused up front rather than trusted with the image's pycs.
pub const NEWEST_KNOWN: (u32, u32) = (3, 15);

/// The oldest CPython the tests build on (Debian bullseye's). Older ones with
/// hash-based pycs (3.7, 3.8) are let through untested; before 3.7 the driver
/// finds no `_imp.source_hash` and says so.
pub const OLDEST_TESTED: (u32, u32) = (3, 9);

fn fmt_version((major, minor): (u32, u32)) -> String {
    format!("{major}.{minor}")
}

/// Refuses a Python newer than [`NEWEST_KNOWN`], naming the way out.
fn check_known(base: &str, python: &PythonInfo) -> Result<(), BytecodeError> {
    if (python.version.0, python.version.1) > NEWEST_KNOWN {
        return Err(BytecodeError::UnknownPython {
            base: base.to_owned(),
            version: python.full_version(),
        });
    }
    Ok(())
}

/// Unpacks `base` into `cache` (once per set of layers) and starts its Python.
pub fn prepare(
    base: &dyn BaseLayers,
    python: &PythonInfo,
    cache: &Path,
    policy: crate::sandbox::Policy,
) -> Result<Interpreter, BytecodeError> {
    prepare_unpacked(base, python, cache, policy, false)
}

/// [`prepare`] on the whole base unpacked, for a build that needs more of
/// the base than its interpreter (a compiler, headers).
pub fn prepare_whole(
    base: &dyn BaseLayers,
    python: &PythonInfo,
    cache: &Path,
    policy: crate::sandbox::Policy,
) -> Result<Interpreter, BytecodeError> {
    prepare_unpacked(base, python, cache, policy, true)
}

fn prepare_unpacked(
    base: &dyn BaseLayers,
    python: &PythonInfo,
    cache: &Path,
    policy: crate::sandbox::Policy,
    whole: bool,
) -> Result<Interpreter, BytecodeError> {
    let target = Target {
        base: base.name(),
        layer_digests: base.layer_digests(),
        interpreter: &python.interpreter,
        prefix: &python.prefix,
        minor_version: python.minor_version(),
        arch: &python.arch,
        whole,
    };
    let mut layers = |i: usize, f: &mut dyn FnMut(&mut dyn io::Read) -> io::Result<()>| {
        base.read_layer(i, f).map_err(BytecodeError::Base)
    };
    Interpreter::prepare(&target, cache, policy, &mut layers)
}

/// A prepared interpreter and the mode: what a build compiles with.
pub struct Compiler {
    pub interp: Interpreter,
    pub mode: Mode,
    /// Where sources are staged (a directory on the same disk as the cache).
    pub scratch: std::path::PathBuf,
}

impl Compiler {
    /// Unpacks the base and starts its Python; None when `mode` is off.
    pub fn for_base(
        base: &dyn BaseLayers,
        python: &PythonInfo,
        mode: Mode,
        cache: &Path,
        policy: crate::sandbox::Policy,
    ) -> Result<Option<Compiler>, BytecodeError> {
        if mode == Mode::Off {
            return Ok(None);
        }
        check_known(base.name(), python)?;
        let cache = std::path::absolute(cache).unwrap_or_else(|_| cache.to_path_buf());
        let interp = prepare(base, python, &cache, policy)?;
        let scratch = cache.join("scratch");
        std::fs::create_dir_all(&scratch).map_err(|source| BytecodeError::Stage {
            label: base.name().to_string(),
            path: scratch.display().to_string(),
            source,
        })?;
        Ok(Some(Compiler {
            interp,
            mode,
            scratch,
        }))
    }

    /// [`add_pycs`] with this compiler's interpreter and mode.
    pub fn add(
        &self,
        plan: &mut LayerPlan,
        external: &mut dyn ExternalContent,
        label: &str,
        within: &ImagePath,
        on_failure: OnFailure,
    ) -> Result<Vec<Failure>, BytecodeError> {
        add_pycs(
            plan,
            external,
            &self.interp,
            self.mode,
            label,
            within,
            on_failure,
            &self.scratch,
        )
    }
}

/// The largest source compiled: the source goes to the interpreter whole and
/// its pyc comes back whole, so a hostile 1 GiB `.py` cost 2 GiB of memory.
/// The largest `.py` files of real packages (generated tables, vendored
/// parsers) are a few MiB; one over this ships without a pyc.
pub const MAX_SOURCE: u64 = 64 << 20;

/// Whether a failing source fails the build (the app's own) or is skipped (a
/// package's template or Python 2 leftover, as pip does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    Fail,
    Skip,
}

/// Compiles every `.py` file of `plan` below `within` in one fresh
/// interpreter and adds its pyc next to it (in `__pycache__`). Returns the
/// sources skipped because they do not compile.
#[allow(clippy::too_many_arguments)]
pub fn add_pycs(
    plan: &mut LayerPlan,
    external: &mut dyn ExternalContent,
    interp: &Interpreter,
    mode: Mode,
    label: &str,
    within: &ImagePath,
    on_failure: OnFailure,
    scratch_parent: &Path,
) -> Result<Vec<Failure>, BytecodeError> {
    if mode == Mode::Off {
        return Ok(Vec::new());
    }
    // The interpreter starts at the first source no earlier build compiled.
    let mut session: Option<compile::Session> = None;
    // pyc per source, from the cache of earlier builds (by interpreter, mode, path and source).
    let mut reused: Vec<(ImagePath, Vec<u8>)> = Vec::new();
    let mut keys: Vec<(ImagePath, String)> = Vec::new();
    let cache_dir = scratch_parent
        .parent()
        .unwrap_or(scratch_parent)
        .join("pycs");
    // Only the app's sources (the ones that fail the build) keep a pyc each
    // in the cache: the app changes a file at a time. A package's pycs are
    // cached with its whole layer, and a file per pyc cost a cold build of
    // numpy/pandas/scipy about 3,000 file creations for nothing.
    let per_source = on_failure == OnFailure::Fail;
    // In the plan's order, which is the image paths' sorted order: the order
    // a package's sources are compiled in is part of what makes its pycs.
    let mut too_large = Vec::new();
    for (path, entry) in plan.entries() {
        let EntryKind::File { content, size } = &entry.kind else {
            continue;
        };
        if !path.as_str().ends_with(".py") || !path.starts_with(within) {
            continue;
        }
        if *size > MAX_SOURCE {
            too_large.push(Failure {
                path: path.clone(),
                line: None,
                message: format!(
                    "not compiled: {} MiB, over the {} MiB a source may have (Python compiles it at import)",
                    size >> 20,
                    MAX_SOURCE >> 20
                ),
            });
            continue;
        }
        let src = source_bytes(content, path, external, label)?;
        if per_source {
            let key = pyc_cache_key(interp, mode, path, &src);
            let pyc = compile::pyc_path(path, &interp.cache_tag);
            if let (Some(pyc), Some(bytes)) = (pyc, cached_pyc(&cache_dir.join(&key))) {
                reused.push((pyc, bytes));
                continue;
            }
            keys.push((path.clone(), key));
        }
        let session = match &mut session {
            Some(s) => s,
            None => session.insert(compile::Session::start(interp, mode, label)?),
        };
        session.add(path, &src);
    }
    let mut compiled = match session {
        Some(s) => s.finish()?,
        None => compile::Compiled::default(),
    };
    remember_pycs(&cache_dir, &keys, &compiled.pycs);
    compiled.pycs.extend(reused);
    if on_failure == OnFailure::Fail {
        if let Some(failure) = compiled.failed.first() {
            return Err(BytecodeError::AppSyntax {
                failure: failure.clone(),
            });
        }
    }
    plan_pycs(plan, compiled.pycs, label)?;
    compiled.failed.extend(too_large);
    Ok(compiled.failed)
}

/// The bytes of the source at `path`, wherever the plan keeps them.
fn source_bytes<'a>(
    content: &'a Content,
    path: &ImagePath,
    external: &mut dyn ExternalContent,
    label: &str,
) -> Result<std::borrow::Cow<'a, [u8]>, BytecodeError> {
    let read_err = |path: String| {
        move |source| BytecodeError::Stage {
            label: label.to_owned(),
            path,
            source,
        }
    };
    Ok(match content {
        Content::HostFile(p) => std::fs::read(p)
            .map_err(read_err(p.display().to_string()))?
            .into(),
        Content::Bytes(b) => b.as_slice().into(),
        Content::External(i) => {
            let mut bytes = Vec::new();
            external
                .open(*i)
                .and_then(|mut r| r.read_to_end(&mut bytes))
                .map_err(read_err(path.absolute()))?;
            bytes.into()
        }
    })
}

/// The pyc cache's key for one source: the interpreter, the mode, the
/// source's path and its bytes.
fn pyc_cache_key(interp: &Interpreter, mode: Mode, path: &ImagePath, src: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for part in [
        interp.identity.as_bytes(),
        interp.cache_tag.as_bytes(),
        mode.invalidation().as_bytes(),
        path.as_str().as_bytes(),
    ] {
        h.update(part);
        h.update([0]);
    }
    h.update(src);
    hex::encode(h.finalize())
}

/// Remembers the new pycs of the sources in `keys` in `cache_dir`; a failed
/// write only costs a later build a compile.
fn remember_pycs(cache_dir: &Path, keys: &[(ImagePath, String)], pycs: &[(ImagePath, Vec<u8>)]) {
    if keys.is_empty() || std::fs::create_dir_all(cache_dir).is_err() {
        return;
    }
    let by_source: std::collections::HashMap<&ImagePath, &String> =
        keys.iter().map(|(p, k)| (p, k)).collect();
    for (pyc, bytes) in pycs {
        let Some(source) = source_of(pyc) else {
            continue;
        };
        if let Some(key) = by_source.get(&source) {
            let tmp = cache_dir.join(format!(".{key}.{}", std::process::id()));
            if std::fs::write(&tmp, with_digest(bytes)).is_ok() {
                let _ = std::fs::rename(&tmp, cache_dir.join(key));
            }
        }
    }
}

/// A cached pyc file: the pyc's sha256, then the pyc, so that a flipped
/// byte (a bad disk, a restore gone wrong, an edit) is found on reuse.
fn with_digest(pyc: &[u8]) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut file = Sha256::digest(pyc).to_vec();
    file.extend_from_slice(pyc);
    file
}

/// The pyc cached at `path` if its digest holds; a file that fails the check
/// is removed (the source is compiled again and the cache healed).
fn cached_pyc(path: &Path) -> Option<Vec<u8>> {
    use sha2::{Digest as _, Sha256};
    let mut file = std::fs::read(path).ok()?;
    let intact = file.len() > 32 && Sha256::digest(&file[32..])[..] == file[..32];
    if !intact {
        let _ = std::fs::remove_file(path);
        return None;
    }
    Some(file.split_off(32))
}

/// Adds the pycs to `plan`, except where a wheel ships its own pyc (it keeps it).
fn plan_pycs(
    plan: &mut LayerPlan,
    pycs: Vec<(ImagePath, Vec<u8>)>,
    label: &str,
) -> Result<(), BytecodeError> {
    for (pyc, bytes) in pycs {
        if plan.get(&pyc).is_none() {
            plan.bytes(pyc, 0o644, bytes)
                .map_err(|source| BytecodeError::Plan {
                    label: label.to_owned(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// `dir/name.py` for `dir/__pycache__/name.TAG.pyc`.
fn source_of(pyc: &ImagePath) -> Option<ImagePath> {
    let name = pyc.file_name();
    let stem = name.strip_suffix(".pyc")?.rsplit_once('.')?.0;
    let cache = pyc.parent()?;
    (cache.file_name() == "__pycache__").then_some(())?;
    match cache.parent() {
        Some(dir) => dir.join(&format!("{stem}.py")).ok(),
        None => ImagePath::new(&format!("{stem}.py")).ok(),
    }
}

/// Whether the standard library at `stdlib` (relative to `root`) has
/// sources without pycs.
pub(crate) fn stdlib_lacks_pycs(root: &Path, stdlib: &str, cache_tag: &str) -> bool {
    let mut sources = Vec::new();
    collect_stdlib(root, stdlib, cache_tag, &mut sources).is_ok() && !sources.is_empty()
}

/// A layer of pycs for the base's standard library sources that have none
/// (python:* images strip them), compiled in parallel by up to `jobs`
/// interpreters. Empty when the stdlib has them all.
pub fn stdlib_plan(
    interp: &Interpreter,
    python: &PythonInfo,
    mode: Mode,
    jobs: usize,
) -> Result<LayerPlan, BytecodeError> {
    let label = "the standard library";
    let stdlib = format!(
        "{}/lib/python{}",
        python.prefix.trim_matches('/'),
        python.minor_version()
    );
    let mut sources = Vec::new();
    interp.make_whole().map_err(|source| BytecodeError::Stage {
        label: label.to_owned(),
        path: interp.root.display().to_string(),
        source,
    })?;
    collect_stdlib(&interp.root, &stdlib, &interp.cache_tag, &mut sources).map_err(|source| {
        BytecodeError::Stage {
            label: label.to_owned(),
            path: interp.root.join(&stdlib).display().to_string(),
            source,
        }
    })?;
    let mut plan = LayerPlan::new();
    if mode == Mode::Off || sources.is_empty() {
        return Ok(plan);
    }
    // Fixed-size runs of the sorted sources, each in a fresh interpreter: the
    // split, and so every pyc, never depends on the number of jobs.
    sources.sort_by(|a, b| a.path.cmp(&b.path));
    let chunks: Vec<&[Source]> = sources.chunks(STDLIB_CHUNK).collect();
    let compiled = crate::parallel::map_ordered(&chunks, jobs, |chunk| {
        compile::compile(interp, mode, label, chunk.to_vec())
    });
    for c in compiled {
        for (pyc, bytes) in c?.pycs {
            plan.bytes(pyc, 0o644, bytes)
                .map_err(|source| BytecodeError::Plan {
                    label: label.to_owned(),
                    source,
                })?;
        }
    }
    Ok(plan)
}

/// Standard-library sources compiled by one interpreter.
const STDLIB_CHUNK: usize = 128;

/// Stdlib `.py` files without a pyc of this interpreter, the test suite and
/// installed packages left out.
fn collect_stdlib(
    root: &Path,
    rel: &str,
    cache_tag: &str,
    out: &mut Vec<Source>,
) -> io::Result<()> {
    // Every link unpacked resolves inside the tree; this holds the walk to it
    // even in a tree that was not unpacked so (an older imgbuild's).
    let dir = root.join(rel);
    let inside = match (dir.canonicalize(), root.canonicalize()) {
        (Ok(real), Ok(real_root)) => real.starts_with(real_root),
        _ => false,
    };
    let Some(entries) = inside.then(|| std::fs::read_dir(&dir).ok()).flatten() else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let child = format!("{rel}/{name}");
        let ft = e.file_type()?;
        if ft.is_dir() {
            if !matches!(
                name.as_str(),
                "__pycache__" | "site-packages" | "dist-packages" | "test" | "tests" | "idlelib"
            ) {
                collect_stdlib(root, &child, cache_tag, out)?;
            }
            continue;
        }
        let Some(stem) = name.strip_suffix(".py") else {
            continue;
        };
        // A symlinked module (Debian's sitecustomize.py) is imported by its link's path.
        let is_file = ft.is_file()
            || (ft.is_symlink()
                && e.path().canonicalize().is_ok_and(|real| {
                    real.is_file() && root.canonicalize().is_ok_and(|r| real.starts_with(r))
                }));
        if !is_file
            || root
                .join(rel)
                .join(format!("__pycache__/{stem}.{cache_tag}.pyc"))
                .exists()
        {
            continue;
        }
        if let Ok(path) = ImagePath::new(&child) {
            out.push(Source {
                path,
                host: e.path(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_newer_than_the_newest_known_is_refused_in_one_line() {
        let mut python = crate::python::markers::test_python("x86_64");
        for minor in 9..=NEWEST_KNOWN.1 {
            python.version = (3, minor, 0);
            assert!(check_known("b", &python).is_ok(), "3.{minor}");
        }
        python.version = (3, NEWEST_KNOWN.1 + 1, 0);
        let text = check_known("oci:base:latest", &python)
            .unwrap_err()
            .to_string();
        assert!(text.contains("Python 3.16.0"), "{text}");
        assert!(text.contains("(3.9 to 3.15)"), "{text}");
        assert!(text.contains("`bytecode = false`"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn a_pyc_path_leads_back_to_its_source() {
        let p = |s: &str| ImagePath::new(s).unwrap();
        for py in ["app/pkg/main.py", "main.py", "app/a.b/c.py"] {
            let pyc = compile::pyc_path(&p(py), "cpython-311").unwrap();
            assert_eq!(source_of(&pyc), Some(p(py)));
        }
        assert_eq!(source_of(&p("app/pkg/main.pyc")), None);
    }

    #[test]
    fn the_stdlib_walk_never_follows_a_link_out_of_the_unpacked_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("secret.py"), b"host").unwrap();
        // A tree unpacked before links were resolved inside it.
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("../../../host", root.join("usr/lib/python3.11")).unwrap();
        let mut sources = Vec::new();
        collect_stdlib(&root, "usr/lib/python3.11", "cpython-311", &mut sources).unwrap();
        assert!(sources.is_empty(), "{:?}", sources.len());
        assert!(!stdlib_lacks_pycs(
            &root,
            "usr/lib/python3.11",
            "cpython-311"
        ));
    }

    #[test]
    fn a_cached_pyc_is_reused_only_while_its_digest_holds_and_a_bad_one_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("key");
        let pyc = b"\xa7\x0d\x0d\x0a\x03\0\0\0hash-bytes code";
        std::fs::write(&path, with_digest(pyc)).unwrap();
        assert_eq!(cached_pyc(&path).as_deref(), Some(&pyc[..]));

        let mut flipped = with_digest(pyc);
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, flipped).unwrap();
        assert_eq!(cached_pyc(&path), None);
        assert!(
            !path.exists(),
            "the bad entry is gone, to be compiled again"
        );

        // A bare pyc planted without its digest (or left by an older imgbuild).
        std::fs::write(&path, pyc).unwrap();
        assert_eq!(cached_pyc(&path), None);
    }
}
