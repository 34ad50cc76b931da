//! Source distributions built into wheels (issue 22), as `pip wheel` and
//! `uv build` would build them: PEP 517 `build_wheel` with the backend the
//! sdist's `[build-system]` names, by the base image's own interpreter inside
//! the sandbox (no network, the base read-only), with build requirements
//! pinned from the package index as of a cutoff date. Each built wheel is
//! kept in the store, keyed by the sdist's sha256, the interpreter's
//! identity and the environment's inputs, so it is built once.

mod env;
mod pyproject;
pub mod resolve;
mod run;

use crate::digest::Digest;
use crate::fetch::{FetchError, Fetcher};
use crate::lock::select::SelectedWheel;
use crate::lock::SimpleIndex;
use crate::python::bytecode::runner::Interpreter;
use crate::python::markers::MarkerEnv;
use crate::python::tags::{Tags, WheelFilename};
use crate::store::Store;
use resolve::{Pin, Resolver};
use run::Outcome;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bumped when a build's inputs or the driver change, so no wheel built
/// the old way is reused.
const BUILD_FORMAT: u32 = 1;
/// A backend asking for more requirements after this many rounds is refused.
const ROUNDS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum SdistError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{package}: its sdist {filename}: {message}")]
    Archive {
        package: String,
        filename: String,
        message: String,
    },
    #[error("{package}: setting up its build environment: {message}")]
    Requirements { package: String, message: String },
    #[error("{package}: its sdist must be built and --offline is set; run once without --offline to fill the cache")]
    Offline { package: String },
    #[error("{package}: its sdist has C (or C++) extensions, and {why}; pick a version of {name} with a wheel for this platform, or build the wheel yourself and point a path source at it (uv: `[tool.uv.sources] {name} = {{ path = \"wheels/….whl\" }}`)")]
    NeedsCompiler {
        package: String,
        name: String,
        /// What is missing, e.g. `the base has no C compiler (…)`.
        why: String,
    },
    #[error("{package}: building a wheel from {filename} with {backend} failed: {line} (run with -v for the build's output)")]
    Failed {
        package: String,
        filename: String,
        backend: String,
        line: String,
    },
    #[error("{package}: the sdist build gave {message}")]
    Output { package: String, message: String },
    #[error("{package}: building its sdist: {message}")]
    Run { package: String, message: String },
    #[error("{package}: the lock has no wheel of it for {platform}, and building its sdist needs the base's Python: {cause}")]
    NoInterpreter {
        package: String,
        platform: String,
        cause: String,
    },
}

/// What a built wheel was made from: kept with it in the store, and shown
/// in the provenance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Built {
    pub name: String,
    pub version: String,
    pub sdist_filename: String,
    pub sdist_sha256: String,
    pub backend: String,
    /// The build environment, by name.
    pub requirements: Vec<Pin>,
    /// Files uploaded after this were not considered for `requirements`.
    pub cutoff: Option<String>,
    pub wheel_filename: String,
    pub wheel_sha256: String,
    pub wheel_size: u64,
    /// Built with the whole base (its compiler): the base's unpack key, so
    /// a base with another compiler builds it again.
    #[serde(default)]
    pub whole_base: Option<String>,
}

impl Built {
    /// The built wheel, as the rest of the build installs it: from the store.
    pub fn wheel(&self, index: Option<String>) -> SelectedWheel {
        SelectedWheel {
            name: self.name.clone(),
            version: self.version.clone(),
            filename: self.wheel_filename.clone(),
            url: None,
            sha256: self.wheel_sha256.clone(),
            size: Some(self.wheel_size),
            index,
            from_sdist: true,
        }
    }
}

/// Everything a build of one sdist reads besides the sdist.
pub struct Builder<'a> {
    pub store: &'a Store,
    pub fetcher: &'a Fetcher<'a>,
    pub index: &'a dyn SimpleIndex,
    /// Where build requirements come from, in order.
    pub indexes: Vec<String>,
    pub cutoff: Option<String>,
    pub env: &'a MarkerEnv,
    pub tags: &'a Tags,
    pub offline: bool,
    /// The interpreter on the whole base unpacked (compiler and headers
    /// included), for an sdist with C extensions.
    pub whole_base: &'a dyn Fn() -> Result<Interpreter, String>,
    /// -v lines.
    pub on_detail: &'a (dyn Fn(String) + Sync),
}

/// Where a base keeps a C compiler, one of which a C extension build needs.
const COMPILERS: &[&str] = &["usr/bin/cc", "usr/bin/gcc", "usr/bin/clang"];

/// The key of the base `interp` was unpacked from (its layers).
fn base_key(interp: &Interpreter) -> String {
    interp
        .root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Builder<'_> {
    /// The wheel built from `sdist` (the package's locked sdist, its sha256
    /// checked on download), from the store when it was built before.
    pub fn build(&self, interp: &Interpreter, sdist: &SelectedWheel) -> Result<Built, SdistError> {
        let package = format!("{} {}", sdist.name, sdist.version);
        let key = self.cache_key(interp, sdist);
        if let Some(built) = self.store.get_meta::<Built>("sdist-builds", &key) {
            let sound = Digest::from_hex(&built.wheel_sha256)
                .is_ok_and(|d| self.store.has_blob(&d) && self.store.verify_blob(&d));
            let same_base = built
                .whole_base
                .as_ref()
                .is_none_or(|k| *k == base_key(interp));
            if sound && same_base {
                return Ok(built);
            }
        }
        if self.offline {
            return Err(SdistError::Offline { package });
        }
        let fetched = self
            .fetcher
            .fetch_all(std::slice::from_ref(sdist), &|_, _| {})?;
        let sdist_path = &fetched[0].path;
        let archive_err = |message: String| SdistError::Archive {
            package: package.clone(),
            filename: sdist.filename.clone(),
            message,
        };
        let system = pyproject::read_build_system(sdist_path).map_err(archive_err)?;
        let built = match self.build_with(interp, sdist, sdist_path, &system) {
            Err(SdistError::NeedsCompiler { .. }) => {
                self.build_on_whole_base(interp, sdist, sdist_path, &system)?
            }
            other => other?,
        };
        self.store
            .put_meta_best_effort("sdist-builds", &key, &built);
        Ok(built)
    }

    /// A build that wanted a compiler, again on the whole base, when the
    /// base has one and the sandbox can show the base as `/` (namespaces).
    fn build_on_whole_base(
        &self,
        interp: &Interpreter,
        sdist: &SelectedWheel,
        sdist_path: &Path,
        system: &pyproject::BuildSystem,
    ) -> Result<Built, SdistError> {
        let needs = |why: &str| SdistError::NeedsCompiler {
            package: format!("{} {}", sdist.name, sdist.version),
            name: sdist.name.clone(),
            why: why.to_owned(),
        };
        if interp.sandbox() != crate::sandbox::Mechanism::Namespaces {
            return Err(needs("C extensions are built only where the sandbox can show the base as / (namespaces), and here it runs under Landlock"));
        }
        let whole = (self.whole_base)().map_err(|message| SdistError::Run {
            package: format!("{} {}", sdist.name, sdist.version),
            message,
        })?;
        if !COMPILERS.iter().any(|c| whole.root.join(c).exists()) {
            return Err(needs(
                "the base has no C compiler (a -dev base has one: Debian's gcc and python3-dev)",
            ));
        }
        (self.on_detail)(format!(
            "{} {}: it has C extensions; building it again with the whole base",
            sdist.name, sdist.version
        ));
        let mut built = self.build_with(&whole, sdist, sdist_path, system)?;
        built.whole_base = Some(base_key(interp));
        Ok(built)
    }

    /// The key of a built wheel: what decides its bytes.
    fn cache_key(&self, interp: &Interpreter, sdist: &SelectedWheel) -> String {
        format!(
            "sdist-build-v{BUILD_FORMAT}\n{}\n{}\n{}\n{}\n{}",
            sdist.sha256,
            interp.identity,
            interp.cache_tag,
            self.cutoff.as_deref().unwrap_or("-"),
            crate::lock::index_config::redact_all(&self.indexes),
        )
    }

    /// Pins the requirements, runs the backend (again when it asks for more
    /// requirements), and checks what it built.
    fn build_with(
        &self,
        interp: &Interpreter,
        sdist: &SelectedWheel,
        sdist_path: &Path,
        system: &pyproject::BuildSystem,
    ) -> Result<Built, SdistError> {
        let package = format!("{} {}", sdist.name, sdist.version);
        let req_err = |message: String| SdistError::Requirements {
            package: package.clone(),
            message,
        };
        let mut pins: BTreeMap<String, (Pin, PathBuf)> = BTreeMap::new();
        let mut known: Vec<String> = Vec::new();
        let mut requirements = system.requires.clone();
        for _ in 0..ROUNDS {
            self.resolve(&requirements, &mut pins).map_err(req_err)?;
            let env = self.environment(&pins).map_err(req_err)?;
            let inputs = run::Inputs {
                sdist: sdist_path,
                env: &env,
                backend: &system.backend,
                backend_path: &system.backend_path,
                known: &known,
            };
            let outcome =
                run::run(interp, self.store, &inputs).map_err(|message| SdistError::Run {
                    package: package.clone(),
                    message,
                })?;
            match outcome {
                Outcome::Missing(more) => {
                    known.extend(more.iter().cloned());
                    requirements = more;
                }
                Outcome::Wheel {
                    filename,
                    digest,
                    size,
                } => {
                    self.check_wheel(sdist, &filename)?;
                    (self.on_detail)(format!(
                        "{package}: built {filename} from {} with {} ({})",
                        sdist.filename,
                        system.backend,
                        pins.values()
                            .map(|(p, _)| format!("{} {}", p.name, p.version))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    return Ok(Built {
                        name: sdist.name.clone(),
                        version: sdist.version.clone(),
                        sdist_filename: sdist.filename.clone(),
                        sdist_sha256: sdist.sha256.clone(),
                        backend: system.backend.clone(),
                        requirements: pins.into_values().map(|(p, _)| p).collect(),
                        cutoff: self.cutoff.clone(),
                        wheel_filename: filename,
                        wheel_sha256: digest.hex().to_owned(),
                        wheel_size: size,
                        whole_base: None,
                    });
                }
                Outcome::Failed { log, timed_out, .. } => {
                    return Err(self.failure(sdist, system, &log, timed_out))
                }
            }
        }
        Err(req_err(format!(
            "the backend still asked for more requirements after {ROUNDS} rounds"
        )))
    }

    fn resolve(
        &self,
        requirements: &[String],
        pins: &mut BTreeMap<String, (Pin, PathBuf)>,
    ) -> Result<(), String> {
        let fetch = |pin: &Pin| self.fetch_pin(pin);
        Resolver {
            index: self.index,
            indexes: &self.indexes,
            env: self.env,
            tags: self.tags,
            cutoff: self.cutoff.as_deref(),
            fetch: &fetch,
        }
        .resolve(requirements, pins)
    }

    fn fetch_pin(&self, pin: &Pin) -> Result<PathBuf, String> {
        let wheel = SelectedWheel {
            name: pin.name.clone(),
            version: pin.version.clone(),
            filename: pin.filename.clone(),
            url: Some(pin.url.clone()),
            sha256: pin.sha256.clone(),
            size: None,
            index: None,
            from_sdist: false,
        };
        let fetched = self
            .fetcher
            .fetch_all(&[wheel], &|_, _| {})
            .map_err(|e| crate::text::error_chain(&e))?;
        Ok(fetched[0].path.clone())
    }

    /// The pinned wheels unpacked into one directory, made once per set of pins.
    fn environment(&self, pins: &BTreeMap<String, (Pin, PathBuf)>) -> Result<PathBuf, String> {
        let id: String = pins
            .values()
            .map(|(p, _)| format!("{}\n", p.sha256))
            .collect();
        let dir = self
            .store
            .root()
            .join("sdist-envs")
            .join(&Digest::of_bytes(id.as_bytes()).hex()[..32]);
        if dir.is_dir() {
            return Ok(dir);
        }
        let parent = dir.parent().expect("a parent");
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".env-")
            .tempdir_in(parent)
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        for (pin, wheel) in pins.values() {
            env::unpack_wheel(wheel, tmp.path()).map_err(|e| format!("{}: {e}", pin.filename))?;
        }
        let tmp = tmp.keep();
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another build made the same environment first: use theirs.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(dir)
    }

    /// The wheel must be the package's, and fit the target.
    fn check_wheel(&self, sdist: &SelectedWheel, filename: &str) -> Result<(), SdistError> {
        let output = |message: String| SdistError::Output {
            package: format!("{} {}", sdist.name, sdist.version),
            message,
        };
        let wheel = WheelFilename::parse(filename)
            .map_err(|e| output(format!("`{filename}`, not a wheel file name: {e}")))?;
        if wheel.name.as_ref() != sdist.name {
            return Err(output(format!("{filename}, a wheel of another package")));
        }
        if !self.tags.fits_local_build(&wheel) {
            return Err(output(format!(
                "{filename}, whose tags ({}) do not fit the base's Python",
                wheel.tag_string()
            )));
        }
        Ok(())
    }

    fn failure(
        &self,
        sdist: &SelectedWheel,
        system: &pyproject::BuildSystem,
        log: &str,
        timed_out: Option<std::time::Duration>,
    ) -> SdistError {
        let package = format!("{} {}", sdist.name, sdist.version);
        for line in log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            (self.on_detail)(format!("{package} build: {line}"));
        }
        if let Some(why) = run::missing_for_c(log) {
            return SdistError::NeedsCompiler {
                package,
                name: sdist.name.clone(),
                why: why.to_owned(),
            };
        }
        let line = match timed_out {
            Some(limit) => format!("it ran past its {} minute limit", limit.as_secs() / 60),
            None => run::last_line(log),
        };
        SdistError::Failed {
            package,
            filename: sdist.filename.clone(),
            backend: system.backend.clone(),
            line,
        }
    }
}
