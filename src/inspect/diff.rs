//! Explains how two images differ, top-down, in diffoci's categories
//! (platforms, manifest, config, layers, tar entries), and by Python package:
//! each layer imgbuild wrote is matched to what it installed.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Layer descriptor annotation naming the package a layer installs
/// (`name version`); read when present, else the config's history is used.
pub const ANNOTATION_PACKAGE: &str = "dev.imgbuild.package";

/// How many changed files are listed per layer before a count.
pub const FILES_SHOWN: usize = 20;

/// One platform's image as the diff sees it.
#[derive(Clone, Debug)]
pub struct ImageFacts {
    pub platform: String,
    pub manifest_digest: String,
    pub config: Value,
    pub layers: Vec<LayerFacts>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerFacts {
    pub digest: String,
    pub size: u64,
    /// `base`, `venv`, `app`, `name version`, or `merged: a 1, b 2`.
    pub label: String,
}

/// One tar entry, for the file level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileMeta {
    pub kind: &'static str,
    pub mode: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub a: String,
    pub b: String,
    pub a_digest: String,
    pub b_digest: String,
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    pub platforms: Vec<PlatformDiff>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PlatformDiff {
    pub platform: String,
    pub a_manifest: String,
    pub b_manifest: String,
    pub identical: bool,
    pub config: Vec<FieldChange>,
    pub packages: Vec<PackageChange>,
    pub layers: Vec<LayerChange>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub a: Value,
    pub b: Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageChange {
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    pub a: Option<String>,
    pub b: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LayerChange {
    /// What the layer holds (`app`, `venv`, `base #3`, a package name).
    pub layer: String,
    pub a: Option<String>,
    pub b: Option<String>,
    /// The first FILES_SHOWN changed entries, when both sides were listed.
    pub files: Vec<FileChange>,
    /// How many entries changed in all.
    pub files_changed: usize,
    /// Why files could not be listed, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    pub a: Option<FileMeta>,
    pub b: Option<FileMeta>,
}

impl Report {
    pub fn identical(&self) -> bool {
        self.only_in_a.is_empty()
            && self.only_in_b.is_empty()
            && self.platforms.iter().all(|p| p.identical)
    }
}

/// The labels of an image's layers: the descriptor annotation when there is
/// one, else imgbuild's history entry (`imgbuild: <label>`), else `base`.
pub fn layer_labels(config: &Value, annotations: &[Option<String>]) -> Vec<String> {
    let from_history: Vec<String> = config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|e| e["empty_layer"].as_bool() != Some(true))
                .map(|e| {
                    e["created_by"]
                        .as_str()
                        .and_then(|c| c.strip_prefix("imgbuild: "))
                        .unwrap_or("base")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    annotations
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            Some(a) => a.clone(),
            None => from_history
                .get(i)
                .cloned()
                .unwrap_or_else(|| "base".into()),
        })
        .collect()
}

/// name → version of the packages a label names.
fn label_packages(label: &str) -> Vec<(String, String)> {
    let one = |s: &str| {
        let (n, v) = s.trim().split_once(' ')?;
        Some((n.to_string(), v.to_string()))
    };
    match label {
        "base" | "venv" | "app" => Vec::new(),
        l if l.starts_with("merged: ") => {
            l["merged: ".len()..].split(", ").filter_map(one).collect()
        }
        l => one(l).into_iter().collect(),
    }
}

/// A key pairing layers across the two images: a package's name, `venv`,
/// `app`, `merged`, or `base #i` for the i-th base layer.
fn layer_keys(layers: &[LayerFacts]) -> Vec<String> {
    let mut base = 0;
    layers
        .iter()
        .map(|l| match l.label.as_str() {
            "base" => {
                base += 1;
                format!("base #{base}")
            }
            "venv" | "app" => l.label.clone(),
            m if m.starts_with("merged: ") => "merged".into(),
            p => p.split(' ').next().unwrap_or(p).to_string(),
        })
        .collect()
}

/// Config fields compared, as JSON pointers and how they are named.
const FIELDS: &[(&str, &str)] = &[
    ("/architecture", "architecture"),
    ("/os", "os"),
    ("/variant", "variant"),
    ("/created", "created"),
    ("/author", "author"),
    ("/config/User", "user"),
    ("/config/Env", "env"),
    ("/config/Entrypoint", "entrypoint"),
    ("/config/Cmd", "cmd"),
    ("/config/WorkingDir", "workdir"),
    ("/config/ExposedPorts", "exposed ports"),
    ("/config/Labels", "labels"),
    ("/config/Volumes", "volumes"),
    ("/config/StopSignal", "stop signal"),
];

pub fn config_changes(a: &Value, b: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    for (ptr, name) in FIELDS {
        let (va, vb) = (
            a.pointer(ptr).cloned().unwrap_or(Value::Null),
            b.pointer(ptr).cloned().unwrap_or(Value::Null),
        );
        if va == vb {
            continue;
        }
        // Env and labels: name each variable that changed, not the whole list.
        if *name == "env" || *name == "labels" {
            let map = |v: &Value| -> BTreeMap<String, Value> {
                match v {
                    Value::Array(items) => items
                        .iter()
                        .filter_map(|i| i.as_str()?.split_once('='))
                        .map(|(k, v)| (k.to_string(), Value::from(v)))
                        .collect(),
                    Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    _ => BTreeMap::new(),
                }
            };
            let (ma, mb) = (map(&va), map(&vb));
            let keys: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
            for k in keys {
                let (x, y) = (
                    ma.get(k).cloned().unwrap_or(Value::Null),
                    mb.get(k).cloned().unwrap_or(Value::Null),
                );
                if x != y {
                    out.push(FieldChange {
                        field: format!("{name}.{k}"),
                        a: x,
                        b: y,
                    });
                }
            }
            continue;
        }
        out.push(FieldChange {
            field: name.to_string(),
            a: va,
            b: vb,
        });
    }
    out
}

pub fn package_changes(a: &[LayerFacts], b: &[LayerFacts]) -> Vec<PackageChange> {
    let pk = |ls: &[LayerFacts]| -> BTreeMap<String, String> {
        ls.iter().flat_map(|l| label_packages(&l.label)).collect()
    };
    let (pa, pb) = (pk(a), pk(b));
    map_changes(&pa, &pb)
        .map(|(n, change, x, y)| PackageChange {
            name: n.clone(),
            change,
            a: x.cloned(),
            b: y.cloned(),
        })
        .collect()
}

/// The keys whose values differ between two maps, in key order, each with
/// `added`, `removed` or `changed` and its values on both sides.
fn map_changes<'m, V: PartialEq>(
    a: &'m BTreeMap<String, V>,
    b: &'m BTreeMap<String, V>,
) -> impl Iterator<Item = (&'m String, &'static str, Option<&'m V>, Option<&'m V>)> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter_map(|k| {
        let (x, y) = (a.get(k), b.get(k));
        let change = match (x, y) {
            (Some(x), Some(y)) if x == y => return None,
            (Some(_), Some(_)) => "changed",
            (Some(_), None) => "removed",
            (None, Some(_)) => "added",
            (None, None) => return None,
        };
        Some((k, change, x, y))
    })
}

/// Layers whose bytes differ (or that one side lacks), paired by what they
/// hold. A package layer whose version changed is explained by the package
/// list and is left out here. Returns the pairs `(a index, b index)` too, so
/// the caller can list files of layers present on both sides.
pub fn layer_changes(
    a: &[LayerFacts],
    b: &[LayerFacts],
    packages: &[PackageChange],
) -> Vec<(LayerChange, Option<usize>, Option<usize>)> {
    let (ka, kb) = (layer_keys(a), layer_keys(b));
    let mut keys: Vec<&String> = ka.iter().collect();
    for k in &kb {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let explained: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    let mut out = Vec::new();
    for k in keys {
        let ia = ka.iter().position(|x| x == k);
        let ib = kb.iter().position(|x| x == k);
        let (da, db) = (ia.map(|i| &a[i].digest), ib.map(|i| &b[i].digest));
        if da == db || explained.contains(k.as_str()) {
            continue;
        }
        out.push((
            LayerChange {
                layer: k.clone(),
                a: da.cloned(),
                b: db.cloned(),
                ..LayerChange::default()
            },
            ia,
            ib,
        ));
    }
    out
}

/// Entries that differ between two layers' listings, sorted by path.
pub fn file_changes(
    a: &BTreeMap<String, FileMeta>,
    b: &BTreeMap<String, FileMeta>,
) -> Vec<FileChange> {
    map_changes(a, b)
        .map(|(p, change, x, y)| FileChange {
            path: p.clone(),
            change,
            a: x.cloned(),
            b: y.cloned(),
        })
        .collect()
}

/// Which layer of A and of B a changed layer is (for listing its files).
pub type LayerPair = (Option<usize>, Option<usize>);

/// Compares one platform's images, without the file level.
pub fn compare_platform(a: &ImageFacts, b: &ImageFacts) -> (PlatformDiff, Vec<LayerPair>) {
    let packages = package_changes(&a.layers, &b.layers);
    let changes = layer_changes(&a.layers, &b.layers, &packages);
    let pairs = changes.iter().map(|(_, ia, ib)| (*ia, *ib)).collect();
    let d = PlatformDiff {
        platform: a.platform.clone(),
        a_manifest: a.manifest_digest.clone(),
        b_manifest: b.manifest_digest.clone(),
        identical: a.manifest_digest == b.manifest_digest,
        config: config_changes(&a.config, &b.config),
        packages,
        layers: changes.into_iter().map(|(l, _, _)| l).collect(),
    };
    (d, pairs)
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".into(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn short(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    &hex[..hex.len().min(12)]
}

fn meta(m: &FileMeta) -> String {
    let mut s = format!("{} {} {}B", m.kind, m.mode, m.size);
    if let Some(h) = &m.sha256 {
        s.push_str(&format!(" sha256:{}", &h[..h.len().min(12)]));
    }
    if let Some(l) = &m.link {
        s.push_str(&format!(" -> {l}"));
    }
    s
}

/// The report for people: one section per platform, top-down.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "A: {} {}\nB: {} {}\n",
        r.a, r.a_digest, r.b, r.b_digest
    ));
    if r.identical() {
        o.push_str("identical: every platform's manifest has the same digest\n");
        return o;
    }
    for p in &r.only_in_a {
        o.push_str(&format!("platform {p}: only in A\n"));
    }
    for p in &r.only_in_b {
        o.push_str(&format!("platform {p}: only in B\n"));
    }
    for p in &r.platforms {
        if p.identical {
            o.push_str(&format!("[{}] identical ({})\n", p.platform, p.a_manifest));
            continue;
        }
        o.push_str(&format!(
            "[{}] manifest {} -> {}\n",
            p.platform,
            short(&p.a_manifest),
            short(&p.b_manifest)
        ));
        if !p.config.is_empty() {
            o.push_str("  config:\n");
            for c in &p.config {
                o.push_str(&format!(
                    "    {}: {} -> {}\n",
                    c.field,
                    show(&c.a),
                    show(&c.b)
                ));
            }
        }
        if !p.packages.is_empty() {
            o.push_str("  packages:\n");
            for c in &p.packages {
                let line = match c.change {
                    "added" => format!("+ {} {}", c.name, c.b.as_deref().unwrap_or("")),
                    "removed" => format!("- {} {}", c.name, c.a.as_deref().unwrap_or("")),
                    _ => format!(
                        "~ {} {} -> {}",
                        c.name,
                        c.a.as_deref().unwrap_or(""),
                        c.b.as_deref().unwrap_or("")
                    ),
                };
                o.push_str(&format!("    {line}\n"));
            }
        }
        if !p.layers.is_empty() {
            o.push_str("  layers:\n");
            for l in &p.layers {
                o.push_str(&format!(
                    "    {}: {} -> {}\n",
                    l.layer,
                    l.a.as_deref().map(short).unwrap_or("(none)"),
                    l.b.as_deref().map(short).unwrap_or("(none)")
                ));
                if let Some(n) = &l.files_note {
                    o.push_str(&format!("      files not compared: {n}\n"));
                }
                for f in &l.files {
                    let detail = match (&f.a, &f.b) {
                        (Some(x), Some(y)) => format!("{} -> {}", meta(x), meta(y)),
                        (Some(x), None) => meta(x),
                        (None, Some(y)) => meta(y),
                        (None, None) => String::new(),
                    };
                    let sign = match f.change {
                        "added" => '+',
                        "removed" => '-',
                        _ => '~',
                    };
                    o.push_str(&format!("      {sign} {} ({detail})\n", f.path));
                }
                if l.files_changed > l.files.len() {
                    o.push_str(&format!(
                        "      … and {} more changed files\n",
                        l.files_changed - l.files.len()
                    ));
                }
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(d: &str, label: &str) -> LayerFacts {
        LayerFacts {
            digest: d.into(),
            size: 1,
            label: label.into(),
        }
    }

    #[test]
    fn labels_come_from_annotations_else_imgbuild_history() {
        let config = json!({"history": [
            {"created_by": "debootstrap"},
            {"created_by": "ENV X=1", "empty_layer": true},
            {"created_by": "imgbuild: venv"},
            {"created_by": "imgbuild: fastapi 0.115.0"},
            {"created_by": "imgbuild: app"},
        ]});
        let labels = layer_labels(&config, &[None, None, Some("uvicorn 0.30.0".into()), None]);
        assert_eq!(labels, ["base", "venv", "uvicorn 0.30.0", "app"]);
    }

    #[test]
    fn packages_added_removed_and_changed_by_name() {
        let a = [
            layer("b", "base"),
            layer("f1", "fastapi 0.115.0"),
            layer("m", "merged: idna 3.7, sniffio 1.3.0"),
            layer("x", "app"),
        ];
        let b = [
            layer("b", "base"),
            layer("f2", "fastapi 0.116.1"),
            layer("m2", "merged: idna 3.7, anyio 4.0"),
            layer("x", "app"),
        ];
        let p = package_changes(&a, &b);
        let got: Vec<(&str, &str, Option<&str>, Option<&str>)> = p
            .iter()
            .map(|c| (c.name.as_str(), c.change, c.a.as_deref(), c.b.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("anyio", "added", None, Some("4.0")),
                ("fastapi", "changed", Some("0.115.0"), Some("0.116.1")),
                ("sniffio", "removed", Some("1.3.0"), None),
            ]
        );
        // fastapi's layer is explained by its version; the merged layer is not.
        let layers: Vec<String> = layer_changes(&a, &b, &p)
            .into_iter()
            .map(|(l, _, _)| l.layer)
            .collect();
        assert_eq!(layers, ["merged"]);
    }

    #[test]
    fn an_edited_app_is_a_changed_app_layer_with_its_file() {
        let a = [layer("b", "base"), layer("x1", "app")];
        let b = [layer("b", "base"), layer("x2", "app")];
        let changes = layer_changes(&a, &b, &[]);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].1, changes[0].2), (Some(1), Some(1)));
        let f = |h: &str| FileMeta {
            kind: "file",
            mode: "0644".into(),
            size: 3,
            sha256: Some(h.into()),
            link: None,
        };
        let la: BTreeMap<_, _> = [
            ("app/main.py".to_string(), f("aa")),
            ("app/x.py".into(), f("cc")),
        ]
        .into();
        let lb: BTreeMap<_, _> = [
            ("app/main.py".to_string(), f("bb")),
            ("app/x.py".into(), f("cc")),
        ]
        .into();
        let fc = file_changes(&la, &lb);
        assert_eq!(fc.len(), 1);
        assert_eq!(
            (fc[0].path.as_str(), fc[0].change),
            ("app/main.py", "changed")
        );
    }

    #[test]
    fn config_changes_name_each_env_variable_and_field() {
        let a = json!({"created": "1970-01-01T00:00:00Z", "config": {"Env": ["A=1", "B=2"], "User": "1000:1000"}});
        let b = json!({"created": "2024-01-01T00:00:00Z", "config": {"Env": ["A=1", "B=3", "C=4"], "User": "1000:1000"}});
        let c = config_changes(&a, &b);
        let fields: Vec<&str> = c.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["created", "env.B", "env.C"]);
        assert_eq!(c[2].a, Value::Null);
    }

    #[test]
    fn render_is_top_down_and_counts_beyond_twenty_files() {
        let mut l = LayerChange {
            layer: "app".into(),
            a: Some("sha256:aaaa".into()),
            b: Some("sha256:bbbb".into()),
            files_changed: 25,
            ..Default::default()
        };
        for i in 0..FILES_SHOWN {
            l.files.push(FileChange {
                path: format!("app/f{i}.py"),
                change: "added",
                a: None,
                b: None,
            });
        }
        let r = Report {
            a: "A".into(),
            b: "B".into(),
            platforms: vec![PlatformDiff {
                platform: "linux/amd64".into(),
                a_manifest: "sha256:1".into(),
                b_manifest: "sha256:2".into(),
                packages: vec![PackageChange {
                    name: "fastapi".into(),
                    change: "changed",
                    a: Some("1".into()),
                    b: Some("2".into()),
                }],
                layers: vec![l],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&r);
        let pkg = text.find("~ fastapi 1 -> 2").unwrap();
        let file = text.find("+ app/f0.py").unwrap();
        assert!(pkg < file);
        assert!(text.contains("… and 5 more changed files"));
    }
}
