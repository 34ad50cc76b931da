//! The I/O behind the checks: what each wheel installs and needs, and what the
//! base has, each read once and cached in the store (per wheel and venv, per
//! base manifest), so a warm build only reads a few small records.

use super::native::{self, BaseLibs, WheelNative};
use super::{BaseFiles, PackageFiles};
use crate::base::BaseImage;
use crate::layer::tar::ExternalContent;
use crate::layer::{Content, EntryKind};
use crate::python::install::{self as wheel, WheelContent, WheelError};
use crate::python::rootfs::{Occupant, RootFs};
use crate::python::venv::VenvTarget;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::OnceLock;

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

/// The base's files, read from its layers only when a check needs them, and
/// remembered per base manifest.
pub struct BaseView<'a> {
    base: &'a BaseImage,
    store: &'a Store,
    rootfs: OnceLock<Option<RootFs>>,
}

impl<'a> BaseView<'a> {
    pub fn new(base: &'a BaseImage, store: &'a Store) -> Self {
        BaseView {
            base,
            store,
            rootfs: OnceLock::new(),
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

    /// The base's library directories and their contents.
    pub fn libs(&self) -> Option<BaseLibs> {
        let key = format!("libs-v{FACTS_VERSION}:{}", self.base.manifest_digest);
        if let Some(l) = self.store.get_meta::<BaseLibs>("check", &key) {
            return Some(l);
        }
        let libs = BaseLibs::from_rootfs(self.rootfs()?);
        self.store.put_meta_best_effort("check", &key, &libs);
        Some(libs)
    }
}

impl BaseFiles for BaseView<'_> {
    fn exists(&self, path: &str) -> bool {
        let key = format!("path-v{FACTS_VERSION}:{}:{path}", self.base.manifest_digest);
        if let Some(b) = self.store.get_meta::<bool>("check", &key) {
            return b;
        }
        // A base that cannot be read is not blamed for a missing program.
        let Some(rootfs) = self.rootfs() else {
            return true;
        };
        let found = rootfs.exists(path);
        self.store.put_meta_best_effort("check", &key, &found);
        found
    }

    fn occupant(&self, path: &str) -> Option<Occupant> {
        let key = format!(
            "occupant-v{FACTS_VERSION}:{}:{path}",
            self.base.manifest_digest
        );
        if let Some(o) = self.store.get_meta::<Option<Occupant>>("check", &key) {
            return o;
        }
        // A base that cannot be read is not blamed; reading it fails the build elsewhere.
        let found = self.rootfs()?.occupant(path);
        self.store.put_meta_best_effort("check", &key, &found);
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
