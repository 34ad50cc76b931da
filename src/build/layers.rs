//! The layers a build writes: cached by their inputs, one per wheel within
//! a budget, the rest merged; and the bytecode hooks that add pycs to them.

use super::cache_plan::{layer_annotations, layer_key, wheel_key};
use super::remote_cache::{reuse_layers, Offers, Reused};
use super::{BuildError, BuildOptions, Event};
use crate::check::facts::{self, WheelFacts};
use crate::layer::splice::DeflatedSpan;
use crate::layer::tar::{write_layer_as, Encoding, ExternalContent, NoExternal};
use crate::layer::{Content, Layer, LayerPlan};
use crate::lock::select::SelectedWheel;
use crate::output::BlobOrigin;
use crate::python::bytecode::{self, Compiler, OnFailure};
use crate::python::install::{self as wheel, WheelContent};
use crate::python::interpreter::PythonInfo;
use crate::python::venv::VenvTarget;
use crate::spec::Spec;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;

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

/// A layer looked up by what went into it, so unchanged inputs are never
/// recompressed. The key includes the layer format, the mtime and the
/// compression. A cached blob is hashed in full before it is reused: one whose
/// bytes no longer match its name is dropped and rebuilt (with a warning),
/// never pushed or written out.
pub(super) fn cached_layer(
    opts: &BuildOptions,
    label: &str,
    key: &str,
    make: impl FnOnce() -> Result<(LayerPlan, Box<dyn ExternalContent>), BuildError>,
) -> Result<(Layer, bool), BuildError> {
    let key = layer_key(opts.epoch, opts.compression, key);
    if let Some(layer) = opts.store.get_meta::<Layer>("layers", &key) {
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
    opts.store.put_meta("layers", &key, &layer)?;
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

/// The inputs of a wheel's own layer (`cache_plan::wheel_key`).
pub(super) fn package_inputs(w: &SelectedWheel, target: &VenvTarget, bytecode_key: &str) -> String {
    wheel_key(
        &w.sha256,
        target.venv.as_str(),
        &target.interpreter,
        &format!("{:?}", target.version),
        bytecode_key,
    )
}

/// One layer per wheel, in lock order; when there are more wheels than
/// `budget` layers, the smallest are merged into one shared layer. A wheel
/// with a layer in `reused` (taken from a registry) was not fetched. Returns
/// the layers and each wheel's facts, in lock order.
#[allow(clippy::too_many_arguments)]
pub(super) fn wheel_layers(
    wheels: &[SelectedWheel],
    fetched: &[Option<crate::fetch::Fetched>],
    reused: &[Option<Reused>],
    target: &VenvTarget,
    opts: &BuildOptions,
    budget: usize,
    compiler: Option<&Compiler>,
) -> Result<(Vec<PackageLayer>, Vec<WheelFacts>), BuildError> {
    let bytecode_key = Compiler::key(compiler);
    let sizes: Vec<u64> = fetched
        .iter()
        .map(|f| {
            f.as_ref()
                .and_then(|f| std::fs::metadata(&f.path).ok())
                .map_or(0, |m| m.len())
        })
        .collect();
    let (by_size, merged) = split_by_budget(&sizes, budget);
    let path_of = |i: usize| -> &std::path::Path {
        &fetched[i]
            .as_ref()
            .expect("a wheel without a reused layer is fetched")
            .path
    };

    let built = crate::parallel::map_ordered(&by_size, opts.jobs, |&i| {
        let w = &wheels[i];
        let key = package_inputs(w, target, &bytecode_key);
        let label = format!("{} {}", w.name, w.version);
        let done = |layer: Layer, cached, origin, facts: WheelFacts| {
            (opts.on_event)(Event::Progress {
                label: label.clone(),
            });
            let facts = [facts];
            let annotations = Some(layer_annotations(
                &layer_key(opts.epoch, opts.compression, &key),
                &facts,
            ));
            let [facts] = facts;
            let l = PackageLayer {
                label: label.clone(),
                layer,
                cached,
                origin,
                annotations,
            };
            Ok::<_, BuildError>((l, facts))
        };
        if let Some(r) = &reused[i] {
            let f = r.facts[0].clone();
            facts::remember_wheel_facts(opts.store, &w.sha256, target, &f);
            return done(r.layer.clone(), true, r.origin.clone(), f);
        }
        let path = path_of(i);
        let (layer, cached) = cached_layer(opts, &label, &key, || {
            let install = wheel::plan_install(path, target)?;
            let mut content = WheelContent::open(path)?;
            let mut plan = install.plan;
            package_pycs(opts, compiler, &mut plan, &mut content, w, target)?;
            Ok((plan, Box::new(content) as Box<dyn ExternalContent>))
        })?;
        let f = facts::wheel_facts(opts.store, path, &w.sha256, target)?;
        done(layer, cached, BlobOrigin::Store, f)
    });
    // Back to lock order, so the image never depends on sizes or scheduling.
    let mut built: Vec<(usize, _)> = by_size.iter().copied().zip(built).collect();
    built.sort_by_key(|(i, _)| *i);
    let mut all_facts: Vec<Option<WheelFacts>> = vec![None; wheels.len()];
    let mut out = Vec::new();
    for (i, r) in built {
        let (l, f) = r?;
        out.push(l);
        all_facts[i] = Some(f);
    }

    if !merged.is_empty() {
        let mut merged = merged;
        merged.sort();
        let names: Vec<String> = merged
            .iter()
            .map(|&i| format!("{} {}", wheels[i].name, wheels[i].version))
            .collect();
        let key = format!(
            "merged:{}:{}:{}:{:?}:{bytecode_key}",
            merged
                .iter()
                .map(|&i| wheels[i].sha256.as_str())
                .collect::<Vec<_>>()
                .join(","),
            target.venv,
            target.interpreter,
            target.version
        );
        let (layer, cached) = cached_layer(opts, "merged", &key, || {
            let mut plan = LayerPlan::new();
            let mut sources = Vec::new();
            for (k, &i) in merged.iter().enumerate() {
                let install = wheel::plan_install(path_of(i), target)?;
                let mut content = WheelContent::open(path_of(i))?;
                let mut own = install.plan;
                package_pycs(opts, compiler, &mut own, &mut content, &wheels[i], target)?;
                plan.merge(offset_externals(own, k * MERGE_STRIDE))
                    .map_err(|source| BuildError::Merge {
                        wheel: wheels[i].filename.clone(),
                        source,
                    })?;
                sources.push(content);
            }
            Ok((plan, Box::new(Merged(sources)) as Box<dyn ExternalContent>))
        })?;
        for &i in &merged {
            let f = facts::wheel_facts(opts.store, path_of(i), &wheels[i].sha256, target)?;
            all_facts[i] = Some(f);
        }
        // Never offered to a registry cache: over budget, nothing is reused.
        out.push(PackageLayer {
            label: format!("merged: {}", names.join(", ")),
            layer,
            cached,
            origin: BlobOrigin::Store,
            annotations: None,
        });
    }
    let facts = all_facts
        .into_iter()
        .map(|f| f.expect("every wheel is in a layer"))
        .collect();
    Ok((out, facts))
}

// --- bytecode (issue 9) ---

/// Where the base's unpacked Python and the compile scratch space live.
pub(super) fn bytecode_cache(opts: &BuildOptions) -> PathBuf {
    opts.store.root().join("bytecode")
}

/// One package's pycs, compiled in a fresh interpreter; sources that do not
/// compile are skipped as pip does, and listed under -v.
pub(super) fn package_pycs(
    opts: &BuildOptions,
    compiler: Option<&Compiler>,
    plan: &mut LayerPlan,
    content: &mut WheelContent,
    w: &SelectedWheel,
    target: &VenvTarget,
) -> Result<(), BuildError> {
    let Some(c) = compiler else {
        return Ok(());
    };
    let label = format!("{} {}", w.name, w.version);
    let skipped = c.add(plan, content, &label, &target.venv, OnFailure::Skip)?;
    for f in skipped {
        (opts.on_event)(Event::Detail(format!("{label}: no bytecode for {f}")));
    }
    Ok(())
}

/// The standard library's pycs in a layer of their own, when the base has
/// none and `bytecode-stdlib` is on; cached per interpreter and mode, and
/// reused from a registry cache (it takes long to compile) when offered;
/// the flag says whether it was.
pub(super) fn stdlib_layer(
    spec: &Spec,
    python: &PythonInfo,
    compiler: Option<&Compiler>,
    opts: &BuildOptions,
    offers: &Offers,
) -> Result<(Option<PackageLayer>, bool), BuildError> {
    let Some(c) = compiler.filter(|_| spec.bytecode_stdlib) else {
        return Ok((None, false));
    };
    if !c.interp.stdlib_lacks_pycs {
        return Ok((None, false));
    }
    let inputs = format!("stdlib-pycs:{}:{}", python.prefix, Compiler::key(Some(c)));
    let key = layer_key(opts.epoch, opts.compression, &inputs);
    let annotations = Some(layer_annotations(&key, &[]));
    let label = "stdlib bytecode".to_string();
    if let Some(Some(r)) = reuse_layers(opts, offers, std::slice::from_ref(&key), 0).pop() {
        let reused = PackageLayer {
            label,
            layer: r.layer,
            cached: true,
            origin: r.origin,
            annotations,
        };
        return Ok((Some(reused), true));
    }
    let (layer, cached) = cached_layer(opts, "stdlib bytecode", &inputs, || {
        let plan = bytecode::stdlib_plan(&c.interp, python, c.mode, &c.scratch, opts.jobs)?;
        Ok((plan, Box::new(NoExternal) as Box<dyn ExternalContent>))
    })?;
    let built = PackageLayer {
        label,
        layer,
        cached,
        origin: BlobOrigin::Store,
        annotations,
    };
    Ok((Some(built), false))
}

// --- end bytecode ---

/// Which wheels (by index into `sizes`) get a layer of their own, largest
/// first, and which share the one merged layer: with more wheels than
/// `budget`, all but the `budget - 1` largest are merged. Largest first: the
/// budget keeps them on their own layers, and building them first keeps the
/// biggest wheel from starting last on a busy pool. Ties keep lock order.
pub(super) fn split_by_budget(sizes: &[u64], budget: usize) -> (Vec<usize>, Vec<usize>) {
    let mut by_size: Vec<usize> = (0..sizes.len()).collect();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), i));
    let merged = if sizes.len() > budget.max(1) {
        by_size.split_off(budget.max(1) - 1)
    } else {
        Vec::new()
    };
    (by_size, merged)
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
        let (first, cached) = cached_layer(&opts, "demo 1.0", "k", make).unwrap();
        assert!(!cached);
        let (again, cached) = cached_layer(&opts, "demo 1.0", "k", make).unwrap();
        assert!(cached && again.digest == first.digest);
        assert!(warnings.lock().unwrap().is_empty());

        let blob = store.blob_path(&first.digest);
        let mut bytes = std::fs::read(&blob).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&blob, &bytes).unwrap();
        let (rebuilt, cached) = cached_layer(&opts, "demo 1.0", "k", make).unwrap();
        assert!(!cached, "a corrupt blob must not be reused");
        assert_eq!(rebuilt.digest, first.digest);
        assert!(store.verify_blob(&first.digest));
        let warnings = warnings.lock().unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("demo 1.0"), "{}", warnings[0]);
    }

    #[test]
    fn within_budget_every_wheel_has_its_own_layer_largest_first() {
        let (own, merged) = split_by_budget(&[10, 30, 20], 3);
        assert_eq!(own, [1, 2, 0]);
        assert!(merged.is_empty());
        let (own, merged) = split_by_budget(&[], 0);
        assert!(own.is_empty() && merged.is_empty());
    }

    #[test]
    fn over_budget_the_smallest_share_one_layer() {
        // Budget 3: the two largest keep their layers, the merged layer is the third.
        let (own, merged) = split_by_budget(&[5, 50, 1, 40, 7], 3);
        assert_eq!(own, [1, 3]);
        assert_eq!(merged, [4, 0, 2]);
        // Equal sizes keep lock order; a budget of 0 or 1 merges everything.
        let (own, merged) = split_by_budget(&[1, 1, 1], 2);
        assert_eq!((own, merged), (vec![0], vec![1, 2]));
        let (own, merged) = split_by_budget(&[3, 2], 0);
        assert_eq!((own, merged), (vec![], vec![0, 1]));
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
