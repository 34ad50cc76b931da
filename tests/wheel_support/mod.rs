//! Helpers for tests/wheel_install_vs_uv.rs: synthetic wheels built with the
//! zip crate, and a file tree snapshot with a readable diff.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use zip::write::SimpleFileOptions;

enum Item {
    File(Vec<u8>, u32),
    Dir,
    Symlink(String),
}

/// A wheel described entry by entry; `write` adds METADATA, WHEEL and a
/// correct RECORD (unless a row is overridden on purpose).
pub struct SyntheticWheel {
    dist: String,
    version: String,
    tag: String,
    purelib: bool,
    items: Vec<(String, Item)>,
    entry_points: Option<String>,
    record_overrides: BTreeMap<String, Vec<u8>>,
}

fn record_hash(bytes: &[u8]) -> String {
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
    )
}

impl SyntheticWheel {
    /// `dist` goes into METADATA as written; file names use its escaped form.
    pub fn new(dist: &str, version: &str, tag: &str, purelib: bool) -> Self {
        SyntheticWheel {
            dist: dist.into(),
            version: version.into(),
            tag: tag.into(),
            purelib,
            items: Vec::new(),
            entry_points: None,
            record_overrides: BTreeMap::new(),
        }
    }

    pub fn file(mut self, name: &str, bytes: &[u8], mode: u32) -> Self {
        self.items
            .push((name.into(), Item::File(bytes.to_vec(), mode)));
        self
    }

    pub fn dir(mut self, name: &str) -> Self {
        self.items.push((name.into(), Item::Dir));
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.items.push((name.into(), Item::Symlink(target.into())));
        self
    }

    pub fn entry_points(mut self, text: &str) -> Self {
        self.entry_points = Some(text.into());
        self
    }

    /// Makes RECORD claim `name` holds `bytes`, so its hash no longer matches.
    pub fn record_override(mut self, name: &str, bytes: &[u8]) -> Self {
        self.record_overrides.insert(name.into(), bytes.to_vec());
        self
    }

    fn escaped(&self) -> String {
        let lower = self.dist.to_lowercase();
        lower
            .split(['-', '_', '.'])
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("_")
    }

    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.whl", self.escaped(), self.version, self.tag)
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let dist_info = format!("{}-{}.dist-info", self.escaped(), self.version);
        let mut items: Vec<(String, &Item)> =
            self.items.iter().map(|(n, i)| (n.clone(), i)).collect();
        let metadata = format!("Metadata-Version: 2.1\nName: {}\nVersion: {}\nSummary: test wheel\n\nBody: not a header\n", self.dist, self.version);
        let wheel = format!(
            "Wheel-Version: 1.0\nGenerator: imgbuild-test\nRoot-Is-Purelib: {}\nTag: {}\n",
            self.purelib, self.tag
        );
        let mut generated = vec![
            (format!("{dist_info}/METADATA"), metadata.into_bytes()),
            (format!("{dist_info}/WHEEL"), wheel.into_bytes()),
        ];
        if let Some(ep) = &self.entry_points {
            generated.push((
                format!("{dist_info}/entry_points.txt"),
                ep.clone().into_bytes(),
            ));
        }
        let generated_items: Vec<(String, Item)> = generated
            .into_iter()
            .map(|(n, b)| (n, Item::File(b, 0o644)))
            .collect();
        items.extend(generated_items.iter().map(|(n, i)| (n.clone(), i)));

        let mut record = String::new();
        for (name, item) in &items {
            if let Item::File(bytes, _) = item {
                let claimed = self.record_overrides.get(name).unwrap_or(bytes);
                writeln!(record, "{name},{},{}", record_hash(claimed), claimed.len()).unwrap();
            }
        }
        writeln!(record, "{dist_info}/RECORD,,").unwrap();
        let record_item = Item::File(record.into_bytes(), 0o644);
        items.push((format!("{dist_info}/RECORD"), &record_item));

        let path = dir.join(self.file_name());
        let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, item) in items {
            match item {
                Item::File(bytes, mode) => {
                    zip.start_file(name.as_str(), options.unix_permissions(*mode))
                        .unwrap();
                    zip.write_all(bytes).unwrap();
                }
                Item::Dir => zip
                    .add_directory(name.as_str(), options.unix_permissions(0o755))
                    .unwrap(),
                Item::Symlink(target) => zip
                    .add_symlink(name.as_str(), target.as_str(), options)
                    .unwrap(),
            }
        }
        zip.finish().unwrap();
        path
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, bytes: Vec<u8> },
    Symlink { target: String },
}

impl Node {
    fn describe(&self) -> String {
        match self {
            Node::Dir { mode } => format!("directory {mode:o}"),
            Node::Symlink { target } => format!("symlink -> {target}"),
            Node::File { mode, bytes } => {
                let digest = hex::encode(Sha256::digest(bytes));
                format!(
                    "file {mode:o}, {} bytes, sha256 {}",
                    bytes.len(),
                    &digest[..12]
                )
            }
        }
    }
}

/// Every path under a root, relative to it, with what it is.
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    /// Reads `root`, leaving out paths for which `skip` is true, and RECORD rows
    /// naming them (RECORD paths are relative to site-packages).
    pub fn read(root: &Path, skip: impl Fn(&str) -> bool) -> Tree {
        let mut nodes = BTreeMap::new();
        for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if skip(&rel) {
                continue;
            }
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Symlink {
                    target: fs::read_link(entry.path())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                }
            } else if meta.is_dir() {
                Node::Dir { mode }
            } else {
                let mut bytes = fs::read(entry.path()).unwrap();
                if rel.ends_with(".dist-info/RECORD") {
                    bytes = filter_record(&rel, &bytes, &skip);
                }
                Node::File { mode, bytes }
            };
            nodes.insert(rel, node);
        }
        Tree { nodes }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn paths(&self) -> Vec<&String> {
        self.nodes.keys().collect()
    }

    /// `None` when equal; otherwise one line per difference, with a line diff
    /// for small text files.
    pub fn diff(&self, ours: &Tree) -> Option<String> {
        let mut out = String::new();
        for (path, theirs) in &self.nodes {
            match ours.nodes.get(path) {
                None => writeln!(out, "only in uv:   {path} ({})", theirs.describe()).unwrap(),
                Some(mine) if mine != theirs => {
                    writeln!(
                        out,
                        "differs:      {path}\n    uv:   {}\n    ours: {}",
                        theirs.describe(),
                        mine.describe()
                    )
                    .unwrap();
                    if let (Node::File { bytes: a, .. }, Node::File { bytes: b, .. }) =
                        (theirs, mine)
                    {
                        if a != b {
                            out.push_str(&text_diff(a, b));
                        }
                    }
                }
                Some(_) => {}
            }
        }
        for (path, mine) in &ours.nodes {
            if !self.nodes.contains_key(path) {
                writeln!(out, "only in ours: {path} ({})", mine.describe()).unwrap();
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// Drops RECORD rows whose file is skipped, resolving `../` against site-packages.
fn filter_record(record_rel: &str, bytes: &[u8], skip: &impl Fn(&str) -> bool) -> Vec<u8> {
    let site_packages: Vec<&str> =
        record_rel.split('/').collect::<Vec<_>>()[..record_rel.split('/').count() - 2].to_vec();
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let path = line.split(',').next().unwrap_or("");
        let mut parts = site_packages.clone();
        for c in path.split('/') {
            if c == ".." {
                parts.pop();
            } else {
                parts.push(c);
            }
        }
        if !skip(&parts.join("/")) {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

fn text_diff(a: &[u8], b: &[u8]) -> String {
    let (Ok(a), Ok(b)) = (std::str::from_utf8(a), std::str::from_utf8(b)) else {
        return String::new();
    };
    if a.len() > 200_000 || b.len() > 200_000 {
        return String::new();
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for l in la.iter().filter(|l| !lb.contains(l)) {
        writeln!(out, "      - {l:?}").unwrap();
    }
    for l in lb.iter().filter(|l| !la.contains(l)) {
        writeln!(out, "      + {l:?}").unwrap();
    }
    if out.is_empty() {
        out = format!("      (same lines, different order or line ends)\n      uv:   {a:?}\n      ours: {b:?}\n");
    }
    out
}
