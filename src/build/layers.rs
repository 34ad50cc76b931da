//! The layers a build writes: cached by their keys (`identity`), one per
//! wheel within the budget, the rest merged into one, and the venv skeleton.

use super::bytecode::package_pycs;
use super::identity::{self, BytecodeInputs, LayerInputs, LayerKey};
use super::remote_cache::Reused;
use super::{BuildError, BuildOptions, Event};
use crate::check::facts::{self, WheelFacts};
use crate::fetch::Fetched;
use crate::layer::splice::DeflatedSpan;
use crate::layer::tar::{write_layer_as, Encoding, ExternalContent, NoExternal};
use crate::layer::{Content, Layer, LayerPlan};
use crate::lock::select::SelectedWheel;
use crate::output::BlobOrigin;
use crate::python::bytecode::Compiler;
use crate::python::install::{self as wheel, WheelContent};
use crate::python::venv::{self, VenvTarget};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

/// Writes a plan as a layer blob into the store.
pub(super) fn store_layer(
    opts: &BuildOptions,
    plan: &LayerPlan,
    external: &mut dyn ExternalContent,
) -> Result<Layer, BuildError> {
    let encoding = Encoding {
        compression: opts.compression,
        jobs: opts.jobs,
    };
    let (_, _, layer) = opts
        .store
        .write_blob(|w| write_layer_as(plan, opts.epoch, external, encoding, w).map(|(l, _)| l))?;
    Ok(layer)
}

/// A layer looked up by its key (what went into it), so unchanged inputs
/// are never recompressed. A cached blob is hashed in full before it is reused: one whose
/// bytes no longer match its name is dropped and rebuilt (with a warning),
/// never pushed or written out.
pub(super) fn cached_layer(
    opts: &BuildOptions,
    label: &str,
    key: &LayerKey,
    make: impl FnOnce() -> Result<(LayerPlan, Box<dyn ExternalContent>), BuildError>,
) -> Result<(Layer, bool), BuildError> {
    if let Some(layer) = opts.store.get_meta::<Layer>("layers", key.as_str()) {
        if opts.store.has_blob(&layer.digest) {
            if opts.store.verify_blob(&layer.digest) {
                return Ok((layer, true));
            }
            (opts.on_event)(Event::Warning(format!(
                "cached layer {label} ({}) no longer matched its digest; dropped it and built it again",
                layer.digest
            )));
        }
    }
    let (plan, mut external) = make()?;
    let layer = match store_layer(opts, &plan, external.as_mut()) {
        Err(BuildError::Store(source)) => {
            return Err(BuildError::Layer {
                label: label.to_string(),
                source,
            })
        }
        r => r?,
    };
    opts.store.put_meta("layers", key.as_str(), &layer)?;
    Ok((layer, false))
}

/// A package layer as the image will list it.
pub(super) struct PackageLayer {
    pub label: String,
    pub layer: Layer,
    pub cached: bool,
    pub origin: BlobOrigin,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Where a wheel's layer comes from: the wheel, fetched into the store, or
/// the layer a registry cache offered (then the wheel was not fetched).
pub(super) enum WheelSource {
    Fetched(Fetched),
    Reused(Reused),
}

impl WheelSource {
    /// The wheel file; only a reused layer has none.
    pub(super) fn path(&self) -> Option<&Path> {
        match self {
            WheelSource::Fetched(f) => Some(&f.path),
            WheelSource::Reused(_) => None,
        }
    }
}

/// What every layer one image generates shares: the options, the venv it
/// installs into, and the compiler its pycs come from (with their key part).
pub(super) struct LayerContext<'a> {
    pub opts: &'a BuildOptions<'a>,
    pub target: &'a VenvTarget,
    pub compiler: Option<&'a Compiler>,
    pub bytecode: BytecodeInputs,
}

impl LayerContext<'_> {
    pub fn key(&self, inputs: &LayerInputs) -> LayerKey {
        LayerKey::new(self.opts.epoch, self.opts.compression, inputs)
    }

    /// Each wheel's own layer key, in lock order: the registry cache and
    /// the local cache look layers up by the same key.
    pub fn wheel_keys(&self, wheels: &[SelectedWheel]) -> Vec<LayerKey> {
        wheels
            .iter()
            .map(|w| {
                self.key(&LayerInputs::Wheel {
                    sha256: &w.sha256,
                    target: self.target,
                    bytecode: &self.bytecode,
                })
            })
            .collect()
    }

    /// A wheel installed into the venv, with its pycs.
    fn install_plan(
        &self,
        w: &SelectedWheel,
        path: &Path,
    ) -> Result<(LayerPlan, WheelContent), BuildError> {
        let mut plan = wheel::plan_install(path, self.target)?.plan;
        let mut content = WheelContent::open(path)?;
        package_pycs(self, &mut plan, &mut content, w)?;
        Ok((plan, content))
    }
}

/// One layer per wheel, in lock order; over `budget` layers, the smallest
/// share one merged layer (`identity::split_by_budget`). `keys` are the
/// wheels' own layer keys. Returns the layers and each wheel's facts, in
/// lock order.
pub(super) fn wheel_layers(
    cx: &LayerContext,
    wheels: &[SelectedWheel],
    keys: &[LayerKey],
    sources: &[WheelSource],
    budget: usize,
) -> Result<(Vec<PackageLayer>, Vec<WheelFacts>), BuildError> {
    let sizes: Vec<u64> = sources
        .iter()
        .map(|s| {
            s.path()
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(0, |m| m.len())
        })
        .collect();
    let (own, merged) = identity::split_by_budget(&sizes, budget);
    let built = crate::parallel::map_ordered(&own, cx.opts.jobs, |&i| {
        own_layer(cx, &wheels[i], &keys[i], &sources[i])
    });
    // Back to lock order, so the image never depends on sizes or scheduling.
    let mut built: Vec<(usize, _)> = own.iter().copied().zip(built).collect();
    built.sort_by_key(|(i, _)| *i);
    let mut all_facts: Vec<Option<WheelFacts>> = vec![None; wheels.len()];
    let mut out = Vec::new();
    for (i, r) in built {
        let (layer, facts) = r?;
        out.push(layer);
        all_facts[i] = Some(facts);
    }
    if !merged.is_empty() {
        let (layer, facts) = merged_layer(cx, wheels, sources, merged)?;
        out.push(layer);
        for (i, f) in facts {
            all_facts[i] = Some(f);
        }
    }
    let facts = all_facts
        .into_iter()
        .map(|f| f.expect("every wheel is in a layer"))
        .collect();
    Ok((out, facts))
}

/// A wheel's own layer: reused from a registry, found in the local cache,
/// or built; annotated with its key and facts for later registry reuse.
fn own_layer(
    cx: &LayerContext,
    w: &SelectedWheel,
    key: &LayerKey,
    source: &WheelSource,
) -> Result<(PackageLayer, WheelFacts), BuildError> {
    let opts = cx.opts;
    let label = identity::package_label(&w.name, &w.version);
    let (layer, cached, origin, facts) = match source {
        WheelSource::Reused(r) => {
            let f = r.facts[0].clone();
            facts::remember_wheel_facts(opts.store, &w.sha256, cx.target, &f);
            (r.layer.clone(), true, r.origin.clone(), f)
        }
        WheelSource::Fetched(fetched) => {
            let path = &fetched.path;
            let (layer, cached) = cached_layer(opts, &label, key, || {
                let (plan, content) = cx.install_plan(w, path)?;
                Ok((plan, Box::new(content) as Box<dyn ExternalContent>))
            })?;
            let f = facts::wheel_facts(opts.store, path, &w.sha256, cx.target)?;
            (layer, cached, BlobOrigin::Store, f)
        }
    };
    (opts.on_event)(Event::Progress {
        label: label.clone(),
    });
    let annotations = Some(key.annotations(std::slice::from_ref(&facts)));
    let layer = PackageLayer {
        label,
        layer,
        cached,
        origin,
        annotations,
    };
    Ok((layer, facts))
}

/// The one layer the wheels over budget share, and their facts by index.
/// Never offered to a registry cache: over budget, nothing is reused, so
/// every one of these wheels was fetched.
fn merged_layer(
    cx: &LayerContext,
    wheels: &[SelectedWheel],
    sources: &[WheelSource],
    mut merged: Vec<usize>,
) -> Result<(PackageLayer, Vec<(usize, WheelFacts)>), BuildError> {
    merged.sort();
    let path_of = |i: usize| {
        sources[i]
            .path()
            .expect("over budget, every wheel is fetched")
    };
    let key = cx.key(&LayerInputs::Merged {
        sha256s: merged.iter().map(|&i| wheels[i].sha256.as_str()).collect(),
        target: cx.target,
        bytecode: &cx.bytecode,
    });
    let (layer, cached) = cached_layer(cx.opts, "merged", &key, || {
        let mut plan = LayerPlan::new();
        let mut contents = Vec::new();
        for (k, &i) in merged.iter().enumerate() {
            let (own, content) = cx.install_plan(&wheels[i], path_of(i))?;
            plan.merge(offset_externals(own, k * MERGE_STRIDE))
                .map_err(|source| BuildError::Merge {
                    wheel: wheels[i].filename.clone(),
                    source,
                })?;
            contents.push(content);
        }
        Ok((plan, Box::new(Merged(contents)) as Box<dyn ExternalContent>))
    })?;
    let mut facts = Vec::new();
    for &i in &merged {
        let f = facts::wheel_facts(cx.opts.store, path_of(i), &wheels[i].sha256, cx.target)?;
        facts.push((i, f));
    }
    let names: Vec<String> = merged
        .iter()
        .map(|&i| identity::package_label(&wheels[i].name, &wheels[i].version))
        .collect();
    let layer = PackageLayer {
        label: identity::merged_label(&names),
        layer,
        cached,
        origin: BlobOrigin::Store,
        annotations: None,
    };
    Ok((layer, facts))
}

/// The venv skeleton's layer (pyvenv.cfg, the interpreter links), cached.
pub(super) fn venv_layer(cx: &LayerContext) -> Result<PackageLayer, BuildError> {
    let key = cx.key(&LayerInputs::Venv { target: cx.target });
    let (layer, cached) = cached_layer(cx.opts, identity::VENV_LABEL, &key, || {
        let plan = venv::skeleton(cx.target);
        Ok((plan, Box::new(NoExternal) as Box<dyn ExternalContent>))
    })?;
    Ok(PackageLayer {
        label: identity::VENV_LABEL.to_string(),
        layer,
        cached,
        origin: BlobOrigin::Store,
        annotations: None,
    })
}

/// The app's layer: never cached by key (it changes with every edit; its
/// pycs are cached per source instead).
pub(super) fn app_layer(opts: &BuildOptions, plan: &LayerPlan) -> Result<PackageLayer, BuildError> {
    Ok(PackageLayer {
        label: identity::APP_LABEL.to_string(),
        layer: store_layer(opts, plan, &mut NoExternal)?,
        cached: false,
        origin: BlobOrigin::Store,
        annotations: None,
    })
}

/// Entry indexes of the k-th merged wheel live at k * MERGE_STRIDE + i.
const MERGE_STRIDE: usize = 1 << 32;

pub(super) fn offset_externals(plan: LayerPlan, offset: usize) -> LayerPlan {
    let mut out = LayerPlan::new();
    for (path, entry) in plan.entries() {
        let path = path.clone();
        let r = match &entry.kind {
            crate::layer::EntryKind::Dir => out.dir(path, entry.mode),
            crate::layer::EntryKind::Symlink { target } => out.symlink(path, target),
            crate::layer::EntryKind::File { size, content } => {
                let content = match content {
                    Content::External(i) => Content::External(offset + i),
                    c => c.clone(),
                };
                out.file(path, entry.mode, *size, content)
            }
        };
        r.expect("paths come from a valid plan");
    }
    out
}

struct Merged(Vec<WheelContent>);

impl ExternalContent for Merged {
    fn open(&mut self, index: usize) -> io::Result<Box<dyn Read + '_>> {
        let (k, i) = (index / MERGE_STRIDE, index % MERGE_STRIDE);
        self.0
            .get_mut(k)
            .ok_or_else(|| io::Error::other("merged wheel index out of range"))?
            .open(i)
    }

    fn deflated(&mut self, index: usize) -> io::Result<Option<DeflatedSpan<'_>>> {
        let (k, i) = (index / MERGE_STRIDE, index % MERGE_STRIDE);
        self.0
            .get_mut(k)
            .ok_or_else(|| io::Error::other("merged wheel index out of range"))?
            .deflated(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{EntryKind, ImagePath};
    use crate::store::Store;
    use std::collections::BTreeMap;

    #[test]
    fn a_cached_layer_whose_blob_rotted_is_rebuilt_with_a_warning_not_reused() {
        let path = |p: &str| ImagePath::new(p).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let http = crate::fetch::LazyHttp::new(Vec::new());
        let warnings = std::sync::Mutex::new(Vec::new());
        let on_event = |e: Event| {
            if let Event::Warning(w) = e {
                warnings.lock().unwrap().push(w);
            }
        };
        let opts = BuildOptions {
            platforms: Vec::new(),
            store: &store,
            http: &http,
            offline: true,
            jobs: 1,
            epoch: 0,
            remote: None,
            on_event: &on_event,
            own_paths: Vec::new(),
            cache: None,
            compression: Default::default(),
        };
        let make = || {
            let mut plan = LayerPlan::new();
            plan.bytes(path("app/x"), 0o644, b"x".to_vec()).unwrap();
            Ok((plan, Box::new(NoExternal) as Box<dyn ExternalContent>))
        };
        let key = LayerKey::new(
            0,
            Default::default(),
            &LayerInputs::StdlibPycs {
                prefix: "k",
                bytecode: &BytecodeInputs::Off,
            },
        );
        let (first, cached) = cached_layer(&opts, "demo 1.0", &key, make).unwrap();
        assert!(!cached);
        let (again, cached) = cached_layer(&opts, "demo 1.0", &key, make).unwrap();
        assert!(cached && again.digest == first.digest);
        assert!(warnings.lock().unwrap().is_empty());

        let blob = store.blob_path(&first.digest);
        let mut bytes = std::fs::read(&blob).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&blob, &bytes).unwrap();
        let (rebuilt, cached) = cached_layer(&opts, "demo 1.0", &key, make).unwrap();
        assert!(!cached, "a corrupt blob must not be reused");
        assert_eq!(rebuilt.digest, first.digest);
        assert!(store.verify_blob(&first.digest));
        let warnings = warnings.lock().unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("demo 1.0"), "{}", warnings[0]);
    }

    #[test]
    fn merged_plans_move_external_content_and_keep_the_rest() {
        let path = |p: &str| ImagePath::new(p).unwrap();
        let mut plan = LayerPlan::new();
        plan.dir(path("venv/lib"), 0o755).unwrap();
        plan.file(path("venv/lib/a.py"), 0o644, 3, Content::External(7))
            .unwrap();
        plan.bytes(path("venv/lib/b.txt"), 0o644, b"hi".to_vec())
            .unwrap();
        plan.symlink(path("venv/lib/c"), "a.py").unwrap();
        let moved = offset_externals(plan.clone(), 2 * MERGE_STRIDE);
        let kinds: BTreeMap<String, EntryKind> = moved
            .entries()
            .map(|(p, e)| (p.as_str().to_string(), e.kind.clone()))
            .collect();
        assert_eq!(
            kinds["venv/lib/a.py"],
            EntryKind::File {
                size: 3,
                content: Content::External(2 * MERGE_STRIDE + 7)
            }
        );
        let original: BTreeMap<String, EntryKind> = plan
            .entries()
            .map(|(p, e)| (p.as_str().to_string(), e.kind.clone()))
            .collect();
        for p in ["venv/lib", "venv/lib/b.txt", "venv/lib/c"] {
            assert_eq!(kinds[p], original[p], "{p}");
        }
        assert_eq!(kinds.len(), original.len());
        assert!(Merged(Vec::new()).open(MERGE_STRIDE + 1).is_err());
    }
}
