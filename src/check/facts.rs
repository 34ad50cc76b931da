//! The I/O behind the checks: what each wheel installs and needs, and what the
//! base has, each read once and cached in the store (per wheel and venv, per
//! base manifest), so a warm build only reads a few small records.

use super::native::{self, BaseLibs, WheelNative};
use super::{BaseFiles, PackageFiles};
use crate::base::BaseImage;
use crate::digest::Digest;
use crate::layer::tar::ExternalContent;
use crate::layer::{Content, EntryKind};
use crate::python::install::{self as wheel, WheelContent, WheelError};
use crate::python::interpreter::PythonInfo;
use crate::python::rootfs::{Occupant, RootFs};
use crate::python::venv::VenvTarget;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// Bumped when what is recorded changes.
pub const FACTS_VERSION: u32 = 1;

/// Largest ELF file read whole for its dynamic section.
const MAX_ELF: u64 = 2 << 30;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WheelFacts {
    pub files: PackageFiles,
    pub native: WheelNative,
}

/// What a wheel installs (site-packages names, scripts) and the libraries its
/// ELF files need, from the cache or from the wheel.
pub fn wheel_facts(
    store: &Store,
    wheel_path: &Path,
    sha256: &str,
    target: &VenvTarget,
) -> Result<WheelFacts, WheelError> {
    let key = facts_key(sha256, target);
    if let Some(f) = store.get_meta::<WheelFacts>("check", &key) {
        return Ok(f);
    }
    let install = wheel::plan_install(wheel_path, target)?;
    let files = PackageFiles::from_plan(
        &install.name,
        &install.version,
        &install.plan,
        &target.site_packages(),
        &target.bin(),
    );
    let all: BTreeSet<String> = install
        .plan
        .entries()
        .map(|(p, _)| p.as_str().to_owned())
        .collect();
    let mut content: Option<WheelContent> = None;
    let mut elves = Vec::new();
    for (path, entry) in install.plan.entries() {
        let EntryKind::File {
            content: Content::External(index),
            size,
        } = &entry.kind
        else {
            continue;
        };
        let name = path.file_name();
        let in_bin = path.parent().as_ref() == Some(&target.bin());
        if !(name.ends_with(".so") || name.contains(".so.") || in_bin)
            || *size < 64
            || *size > MAX_ELF
        {
            continue;
        }
        if content.is_none() {
            content = Some(WheelContent::open(wheel_path)?);
        }
        let reader = content.as_mut().expect("opened above");
        let io_err = |source: io::Error| WheelError::Io {
            wheel: wheel_path.to_path_buf(),
            source,
        };
        let mut r = reader.open(*index).map_err(io_err)?;
        let mut head = [0u8; 4];
        if r.read_exact(&mut head).is_err() || !native::is_elf(&head) {
            continue;
        }
        let mut data = Vec::with_capacity(*size as usize);
        data.extend_from_slice(&head);
        r.read_to_end(&mut data).map_err(io_err)?;
        if let Some(deps) = native::parse_elf(&data) {
            elves.push((path.as_str().to_owned(), deps));
        }
    }
    let facts = WheelFacts {
        files,
        native: native::wheel_native(&all, &elves),
    };
    // A failed cache write only costs the next build a re-read.
    store.put_meta_best_effort("check", &key, &facts);
    Ok(facts)
}

/// Records a wheel's facts read elsewhere (a layer's annotations in a
/// registry), so the checks find them as if the wheel had been read here.
pub fn remember_wheel_facts(store: &Store, sha256: &str, target: &VenvTarget, facts: &WheelFacts) {
    // A failed cache write only costs the next build a re-read.
    store.put_meta_best_effort("check", &facts_key(sha256, target), facts);
}

fn facts_key(sha256: &str, target: &VenvTarget) -> String {
    format!(
        "facts-v{FACTS_VERSION}:{sha256}:{}:{}:{:?}",
        target.venv, target.interpreter, target.version
    )
}

/// What a build learnt about a base from its layers, by manifest digest:
/// its Python, its library directories, and the answers the checks asked
/// for. Published beside an image (docs/reproducibility.md, "Base facts"),
/// so a fresh runner builds on the same base without reading its layers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseFacts {
    /// The base's platform manifest digest: what every fact is about.
    pub base: Option<Digest>,
    pub python: Option<PythonInfo>,
    pub libs: Option<BaseLibs>,
    /// Whether each path asked about exists in the base.
    pub exists: BTreeMap<String, bool>,
    /// What the base has at each directory asked about.
    pub occupants: BTreeMap<String, Option<Occupant>>,
}

impl BaseFacts {
    /// Adds `other`'s answers to these (this one's win; both are about one base).
    pub fn merge(&mut self, other: &BaseFacts) {
        if self.python.is_none() {
            self.python.clone_from(&other.python);
        }
        if self.libs.is_none() {
            self.libs.clone_from(&other.libs);
        }
        for (k, v) in &other.exists {
            self.exists.entry(k.clone()).or_insert(*v);
        }
        for (k, v) in &other.occupants {
            self.occupants.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// Puts `facts` (already checked to be about the base `digest`) in the
/// store, as if this machine had read them from the base's layers.
pub fn remember_base_facts(store: &Store, digest: &Digest, facts: &BaseFacts) {
    // Failed cache writes only cost a read of the base.
    if let Some(p) = &facts.python {
        crate::base::python::remember(store, digest, p);
    }
    if let Some(l) = &facts.libs {
        store.put_meta_best_effort("check", &libs_key(digest), l);
    }
    for (path, found) in &facts.exists {
        store.put_meta_best_effort("check", &path_key(digest, path), found);
    }
    for (path, found) in &facts.occupants {
        store.put_meta_best_effort("check", &occupant_key(digest, path), found);
    }
}

fn libs_key(digest: &Digest) -> String {
    format!("libs-v{FACTS_VERSION}:{digest}")
}

fn path_key(digest: &Digest, path: &str) -> String {
    format!("path-v{FACTS_VERSION}:{digest}:{path}")
}

fn occupant_key(digest: &Digest, path: &str) -> String {
    format!("occupant-v{FACTS_VERSION}:{digest}:{path}")
}

/// The base's files, read from its layers only when a check needs them, and
/// remembered per base manifest. Every answer given is also noted, for
/// [`BaseView::facts`].
pub struct BaseView<'a> {
    base: &'a BaseImage,
    store: &'a Store,
    rootfs: OnceLock<Option<RootFs>>,
    seen: Mutex<BaseFacts>,
}

impl<'a> BaseView<'a> {
    pub fn new(base: &'a BaseImage, store: &'a Store) -> Self {
        BaseView {
            base,
            store,
            rootfs: OnceLock::new(),
            seen: Mutex::default(),
        }
    }

    /// The base image this is a view of.
    pub fn image(&self) -> &BaseImage {
        self.base
    }

    fn rootfs(&self) -> Option<&RootFs> {
        self.rootfs
            .get_or_init(|| read_rootfs(self.base).ok())
            .as_ref()
    }

    fn note(&self, f: impl FnOnce(&mut BaseFacts)) {
        if let Ok(mut seen) = self.seen.lock() {
            f(&mut seen);
        }
    }

    /// What this view answered, with the base's Python: the base's facts
    /// as this build needed them.
    pub fn facts(&self, python: &PythonInfo) -> BaseFacts {
        let mut facts = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        facts.base = Some(self.base.manifest_digest.clone());
        facts.python = Some(python.clone());
        facts
    }

    /// The base's library directories and their contents.
    pub fn libs(&self) -> Option<BaseLibs> {
        let key = libs_key(&self.base.manifest_digest);
        let libs = match self.store.get_meta::<BaseLibs>("check", &key) {
            Some(l) => l,
            None => {
                let libs = BaseLibs::from_rootfs(self.rootfs()?);
                self.store.put_meta_best_effort("check", &key, &libs);
                libs
            }
        };
        self.note(|s| s.libs = Some(libs.clone()));
        Some(libs)
    }
}

impl BaseFiles for BaseView<'_> {
    fn exists(&self, path: &str) -> bool {
        let key = path_key(&self.base.manifest_digest, path);
        let found = match self.store.get_meta::<bool>("check", &key) {
            Some(b) => b,
            None => {
                // A base that cannot be read is not blamed for a missing program.
                let Some(rootfs) = self.rootfs() else {
                    return true;
                };
                let found = rootfs.exists(path);
                self.store.put_meta_best_effort("check", &key, &found);
                found
            }
        };
        self.note(|s| {
            s.exists.insert(path.to_string(), found);
        });
        found
    }

    fn occupant(&self, path: &str) -> Option<Occupant> {
        let key = occupant_key(&self.base.manifest_digest, path);
        let found = match self.store.get_meta::<Option<Occupant>>("check", &key) {
            Some(o) => o,
            None => {
                // A base that cannot be read is not blamed; reading it fails the build elsewhere.
                let found = self.rootfs()?.occupant(path);
                self.store.put_meta_best_effort("check", &key, &found);
                found
            }
        };
        self.note(|s| {
            s.occupants.insert(path.to_string(), found.clone());
        });
        found
    }
}

/// Every base layer applied, keeping only ld.so.conf's contents.
fn read_rootfs(base: &BaseImage) -> Result<RootFs, String> {
    let mut rootfs = RootFs::new();
    for index in 0..base.manifest.layers.len() {
        base.read_layer_tar(index, |tar| {
            rootfs
                .apply_layer(tar, &native::keep_for_libs)
                .map_err(Into::into)
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> BaseFacts {
        BaseFacts {
            base: Some(Digest::of_bytes(b"base")),
            python: Some(crate::python::markers::test_python("x86_64")),
            libs: Some(BaseLibs::default()),
            exists: BTreeMap::from([("/usr/bin/sh".to_string(), true)]),
            occupants: BTreeMap::from([("/app".to_string(), None)]),
        }
    }

    #[test]
    fn remembered_facts_are_found_under_the_keys_the_view_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let f = facts();
        let digest = f.base.clone().unwrap();
        assert!(!crate::base::python::known(&store, &digest));
        remember_base_facts(&store, &digest, &f);
        assert!(crate::base::python::known(&store, &digest));
        assert_eq!(
            store.get_meta::<bool>("check", &path_key(&digest, "/usr/bin/sh")),
            Some(true)
        );
        assert_eq!(
            store.get_meta::<Option<Occupant>>("check", &occupant_key(&digest, "/app")),
            Some(None)
        );
        assert_eq!(
            store.get_meta::<BaseLibs>("check", &libs_key(&digest)),
            f.libs
        );
        let other = Digest::of_bytes(b"another base");
        assert!(!crate::base::python::known(&store, &other));
    }

    #[test]
    fn merging_keeps_every_answer_and_prefers_this_builds() {
        let mut mine = BaseFacts {
            exists: BTreeMap::from([("/usr/bin/sh".to_string(), false)]),
            ..BaseFacts::default()
        };
        mine.merge(&facts());
        assert!(!mine.exists["/usr/bin/sh"], "this build's answer wins");
        assert_eq!(mine.occupants.len(), 1);
        assert!(mine.python.is_some() && mine.libs.is_some());
        let json = serde_json::to_vec(&mine).unwrap();
        assert_eq!(serde_json::from_slice::<BaseFacts>(&json).unwrap(), mine);
    }
}
