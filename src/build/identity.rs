//! The one owner of a generated layer's identity: what went into it (typed),
//! its cache key, the annotations that carry the key into a manifest, its
//! label, and the budget rule that decides which packages get a layer of
//! their own. Every key is computed here, once, from these types.
//!
//! The key strings are part of the layer format (they key the local cache
//! and, hashed, the registry cache through `dev.imgbuild.layer.key`, which
//! is in the manifest): their text must not change without a
//! `LAYER_FORMAT` bump (docs/reproducibility.md). Some parts keep the form
//! they had before this module existed, written out explicitly here.

use super::LAYER_FORMAT;
use crate::check::facts::{WheelFacts, FACTS_VERSION};
use crate::digest::Digest;
use crate::layer::compress::Compression;
use crate::python::bytecode::Compiler;
use crate::python::venv::VenvTarget;
use std::collections::BTreeMap;
use std::fmt;

/// The sha256 of the layer's cache key string, as `sha256:<hex>`.
pub const ANNOTATION_LAYER_KEY: &str = "dev.imgbuild.layer.key";
/// What later stages need from the layer's wheels without their bytes: a
/// compact JSON array of `check::facts::WheelFacts` (site-packages names,
/// scripts in the venv's bin, the libraries its ELF files need), in wheel order.
pub const ANNOTATION_LAYER_FACTS: &str = "dev.imgbuild.layer.facts";

/// The label of the venv skeleton's layer.
pub const VENV_LABEL: &str = "venv";
/// The label of the app's layer.
pub const APP_LABEL: &str = "app";
/// The label of the standard library's pycs layer.
pub const STDLIB_LABEL: &str = "stdlib bytecode";

/// How a package is named in labels, progress and messages: `name version`.
pub fn package_label(name: &str, version: &str) -> String {
    format!("{name} {version}")
}

/// The label of the layer the smallest packages share over budget.
pub fn merged_label(packages: &[String]) -> String {
    format!("merged: {}", packages.join(", "))
}

/// What the pycs of a layer depend on: nothing when bytecode is off, else
/// the invalidation mode and the interpreter's identity (its binary and its
/// stdlib), so layers stay shared across apps on the same base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BytecodeInputs {
    Off,
    On {
        invalidation: &'static str,
        cache_tag: String,
        interpreter_identity: String,
    },
}

impl BytecodeInputs {
    pub fn of(compiler: Option<&Compiler>) -> BytecodeInputs {
        match compiler {
            None => BytecodeInputs::Off,
            Some(c) => BytecodeInputs::On {
                invalidation: c.mode.invalidation(),
                cache_tag: c.interp.cache_tag.clone(),
                interpreter_identity: c.interp.identity.clone(),
            },
        }
    }
}

impl fmt::Display for BytecodeInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BytecodeInputs::Off => f.write_str("bytecode=off"),
            BytecodeInputs::On {
                invalidation,
                cache_tag,
                interpreter_identity,
            } => write!(
                f,
                "bytecode={invalidation}:{cache_tag}:{interpreter_identity}"
            ),
        }
    }
}

/// What went into a generated layer, besides the format, the mtime and the
/// compression (which `LayerKey::new` adds).
pub enum LayerInputs<'a> {
    /// The venv skeleton: its path, the interpreter and its version.
    Venv { target: &'a VenvTarget },
    /// One wheel's own layer: the wheel's sha256, the venv path, the
    /// interpreter path and version (they decide site-packages and the
    /// launchers' shebangs), the pycs' inputs and the recorded facts' version.
    Wheel {
        sha256: &'a str,
        target: &'a VenvTarget,
        bytecode: &'a BytecodeInputs,
    },
    /// The shared layer of the wheels over budget, in lock order.
    Merged {
        sha256s: Vec<&'a str>,
        target: &'a VenvTarget,
        bytecode: &'a BytecodeInputs,
    },
    /// The standard library's pycs: the interpreter's prefix and the pycs' inputs.
    StdlibPycs {
        prefix: &'a str,
        bytecode: &'a BytecodeInputs,
    },
}

/// A Python version as keys have always written it: `(3, 12, 1)`.
fn version_text((major, minor, micro): (u32, u32, u32)) -> String {
    format!("({major}, {minor}, {micro})")
}

impl fmt::Display for LayerInputs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerInputs::Venv { target } => write!(
                f,
                "venv:{}:{}:{}",
                target.venv,
                target.interpreter,
                version_text(target.version)
            ),
            LayerInputs::Wheel {
                sha256,
                target,
                bytecode,
            } => write!(
                f,
                "wheel:{sha256}:{}:{}:{}:{bytecode}:facts-v{FACTS_VERSION}",
                // Relative here (`opt/venv`), absolute in the venv and merged keys.
                target.venv.as_str(),
                target.interpreter,
                version_text(target.version)
            ),
            LayerInputs::Merged {
                sha256s,
                target,
                bytecode,
            } => write!(
                f,
                "merged:{}:{}:{}:{}:{bytecode}",
                sha256s.join(","),
                target.venv,
                target.interpreter,
                version_text(target.version)
            ),
            LayerInputs::StdlibPycs { prefix, bytecode } => {
                write!(f, "stdlib-pycs:{prefix}:{bytecode}")
            }
        }
    }
}

/// The one cache key of a generated layer: the layer format, the mtime
/// every entry gets, the compression, and its inputs. Keys the local cache
/// (`store` meta `layers/<key>`) and, hashed, the registry cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LayerKey(String);

impl LayerKey {
    pub fn new(epoch: u64, compression: Compression, inputs: &LayerInputs) -> LayerKey {
        LayerKey(format!(
            "layer-v{LAYER_FORMAT}:{epoch}:{}:{inputs}",
            compression.name()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value of `dev.imgbuild.layer.key`: the sha256 of the key string.
    pub fn digest(&self) -> String {
        key_digest(&self.0)
    }

    /// The annotations a package layer's descriptor carries.
    pub fn annotations(&self, facts: &[WheelFacts]) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ANNOTATION_LAYER_KEY.to_string(), self.digest()),
            (
                ANNOTATION_LAYER_FACTS.to_string(),
                serde_json::to_string(facts).expect("facts serialise"),
            ),
        ])
    }
}

/// The annotation value of a key string: its sha256.
pub fn key_digest(key: &str) -> String {
    Digest::of_bytes(key.as_bytes()).to_string()
}

/// How many layers the packages may have: the spec's `layer-budget` less
/// the base's layers, the venv and app layers, and the stdlib pycs layer.
pub fn package_budget(layer_budget: usize, base_layers: usize, stdlib_layer: bool) -> usize {
    layer_budget.saturating_sub(base_layers + 2 + usize::from(stdlib_layer))
}

/// Whether `packages` packages each get a layer of their own within
/// `budget` (a budget of 0 counts as 1): the one budget rule.
pub fn within_budget(packages: usize, budget: usize) -> bool {
    packages <= budget.max(1)
}

/// Which packages (by index into `sizes`) get a layer of their own, largest
/// first, and which share the one merged layer: over budget, all but the
/// `budget - 1` largest are merged. Largest first: the budget keeps them on
/// their own layers, and building them first keeps the biggest wheel from
/// starting last on a busy pool. Ties keep lock order.
pub fn split_by_budget(sizes: &[u64], budget: usize) -> (Vec<usize>, Vec<usize>) {
    let mut by_size: Vec<usize> = (0..sizes.len()).collect();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), i));
    let merged = if within_budget(sizes.len(), budget) {
        Vec::new()
    } else {
        by_size.split_off(budget.max(1) - 1)
    };
    (by_size, merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::ImagePath;

    /// Python 3.12.1 at /usr/bin/python3, the venv at /opt/venv.
    fn target() -> VenvTarget {
        let venv = ImagePath::new("opt/venv").unwrap();
        let interpreter = "/usr/bin/python3".to_string();
        VenvTarget {
            venv,
            interpreter,
            version: (3, 12, 1),
        }
    }

    fn on() -> BytecodeInputs {
        BytecodeInputs::On {
            invalidation: "checked-hash",
            cache_tag: "cpython-312".into(),
            interpreter_identity: "id".into(),
        }
    }

    #[test]
    fn the_key_names_the_format_the_mtime_the_compression_and_every_input() {
        let t = target();
        let off = BytecodeInputs::Off;
        let wheel = LayerInputs::Wheel {
            sha256: "abc",
            target: &t,
            bytecode: &off,
        };
        let key = LayerKey::new(7, Compression::Gzip, &wheel);
        assert_eq!(
            key.as_str(),
            format!(
                "layer-v{LAYER_FORMAT}:7:gzip:wheel:abc:opt/venv:/usr/bin/python3:(3, 12, 1):bytecode=off:facts-v{FACTS_VERSION}"
            )
        );
        assert_ne!(key, LayerKey::new(7, Compression::Zstd, &wheel));
        assert_eq!(
            key.digest(),
            Digest::of_bytes(key.as_str().as_bytes()).to_string()
        );
    }

    /// These strings are the cache keys (and, hashed, manifest annotations)
    /// of every image built since layer format 4: a change here changes
    /// digests and needs a format bump.
    #[test]
    fn every_kind_of_layer_keeps_its_key_text() {
        let (t, b) = (target(), on());
        let text = |i: LayerInputs| i.to_string();
        assert_eq!(
            text(LayerInputs::Venv { target: &t }),
            "venv:/opt/venv:/usr/bin/python3:(3, 12, 1)"
        );
        assert_eq!(
            text(LayerInputs::Merged {
                sha256s: vec!["a", "b"],
                target: &t,
                bytecode: &b
            }),
            "merged:a,b:/opt/venv:/usr/bin/python3:(3, 12, 1):bytecode=checked-hash:cpython-312:id"
        );
        assert_eq!(
            text(LayerInputs::StdlibPycs {
                prefix: "/usr",
                bytecode: &b
            }),
            "stdlib-pycs:/usr:bytecode=checked-hash:cpython-312:id"
        );
    }

    #[test]
    fn a_package_layer_carries_its_key_digest_and_facts() {
        let t = target();
        let key = LayerKey::new(0, Compression::Gzip, &LayerInputs::Venv { target: &t });
        let a = key.annotations(&[]);
        assert_eq!(a[ANNOTATION_LAYER_KEY], key.digest());
        assert_eq!(a[ANNOTATION_LAYER_FACTS], "[]");
    }

    #[test]
    fn the_budget_leaves_room_for_the_base_the_venv_the_app_and_the_stdlib() {
        assert_eq!(package_budget(20, 3, false), 15);
        assert_eq!(package_budget(20, 3, true), 14);
        assert_eq!(package_budget(4, 3, true), 0);
        assert!(within_budget(1, 0) && !within_budget(2, 0));
        assert!(within_budget(15, 15) && !within_budget(16, 15));
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
}
