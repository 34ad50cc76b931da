//! Installing a wheel into a venv as uv 0.13.9 does (`uv pip install
//! --link-mode copy`, no bytecode), but as a `LayerPlan` instead of files on disk.
//!
//! The plan holds only small generated files in memory (RECORD, INSTALLER,
//! REQUESTED, entry-point launchers, `#!python` scripts with their new shebang);
//! every other file is `Content::External(zip_index)`, streamed by
//! [`WheelContent`] when the layer is written, and checked there against the
//! hash the wheel's RECORD gives for it.
//!
//! Where uv's behaviour is odd we copy it, so the tree matches `uv pip install`:
//! - a `.data/scripts` file shadowed by an entry point is dropped, but its RECORD
//!   row keeps its old `.data/...` path;
//! - a script starting with `#!python` loses its whole first line to the venv's
//!   shebang, so `#!python3 -u` becomes `#!/app/.venv/bin/python`;
//! - RECORD rows keep the wheel's hashes (uv does not rehash unchanged files).
//!
//! We never write uv's `direct_url.json` or `uv_cache.json`: an image installs
//! from a lockfile, not from a URL, and the cache file holds a timestamp.

use crate::digest::{Digest, VerifyingReader};
use crate::layer::plan::PlanError;
use crate::layer::tar::ExternalContent;
use crate::layer::{Content, ImagePath, LayerPlan};
use crate::python::venv::VenvTarget;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zip::ZipArchive;

/// Written to `INSTALLER`, without a newline, exactly as uv does.
pub const INSTALLER: &str = "uv";

/// METADATA, WHEEL, RECORD and entry_points.txt are read whole; anything
/// bigger than this is not a real wheel's metadata.
const MAX_METADATA_FILE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    #[error("cannot read wheel {wheel}: {source}")]
    Io { wheel: PathBuf, source: io::Error },
    #[error(
        "wheel {wheel} is not a readable zip archive ({source}); delete it and download it again"
    )]
    Zip {
        wheel: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("{wheel}: the file name is not `name-version[-build]-python-abi-platform.whl`")]
    Filename { wheel: PathBuf },
    #[error("wheel {wheel} has an unsafe entry {entry:?}: {why}; refusing to install it")]
    UnsafeEntry {
        wheel: PathBuf,
        entry: String,
        why: &'static str,
    },
    #[error("wheel {wheel} is invalid: {what}")]
    Invalid { wheel: PathBuf, what: String },
    #[error("wheel {wheel}: entry {entry:?} cannot be placed in the layer: {what}")]
    Layout {
        wheel: PathBuf,
        entry: String,
        what: String,
    },
}

/// One wheel, planned as a layer on top of the venv skeleton.
#[derive(Debug)]
pub struct WheelInstall {
    pub plan: LayerPlan,
    /// The normalised distribution name (PEP 503), e.g. `typing-extensions`.
    pub name: String,
    /// The version as METADATA spells it.
    pub version: String,
}

/// A zip entry as we install it: checked name, size, exec bit.
#[derive(Debug)]
struct ZipEntry {
    index: usize,
    /// `/`-separated, no `.`, `..` or empty components, no trailing `/`.
    name: String,
    is_dir: bool,
    size: u64,
    executable: bool,
}

/// The shape of one line of RECORD. Field order gives uv's sort order
/// (path, then hash, then size, with a missing value first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RecordRow {
    path: String,
    hash: Option<String>,
    size: Option<u64>,
}

/// An entry point from `[console_scripts]` or `[gui_scripts]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Script {
    name: String,
    module: String,
    /// `obj` or `obj.attr.method`; the launcher imports the first part.
    function: String,
}

impl Script {
    fn import_name(&self) -> &str {
        self.function
            .split_once('.')
            .map_or(&self.function, |(first, _)| first)
    }
}

/// Plans the install of `wheel` into `target`'s venv, reading only the zip
/// directory and the small metadata files.
pub fn plan_install(wheel: &Path, target: &VenvTarget) -> Result<WheelInstall, WheelError> {
    let ctx = Ctx { wheel };
    let file_name = wheel
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let (file_dist, file_version) =
        parse_filename(file_name).ok_or_else(|| WheelError::Filename {
            wheel: wheel.into(),
        })?;

    let file = File::open(wheel).map_err(|source| ctx.io(source))?;
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(|source| ctx.zip(source))?;
    let entries = list_entries(&mut archive, &ctx)?;

    let dist_info = find_dist_info(&entries, &file_dist, &ctx)?;
    let by_name: HashMap<&str, &ZipEntry> = entries
        .iter()
        .filter(|e| !e.is_dir)
        .map(|e| (e.name.as_str(), e))
        .collect();
    let read = |archive: &mut ZipArchive<BufReader<File>>,
                file: &str|
     -> Result<Option<Vec<u8>>, WheelError> {
        let name = format!("{dist_info}.dist-info/{file}");
        match by_name.get(name.as_str()) {
            Some(e) => read_small(archive, e, &ctx).map(Some),
            None => Ok(None),
        }
    };
    let missing = |file: &str| ctx.invalid(format!("{dist_info}.dist-info/{file} is missing"));
    let metadata = read(&mut archive, "METADATA")?.ok_or_else(|| missing("METADATA"))?;
    let wheel_file = read(&mut archive, "WHEEL")?.ok_or_else(|| missing("WHEEL"))?;
    let record_file = read(&mut archive, "RECORD")?.ok_or_else(|| missing("RECORD"))?;
    let entry_points = read(&mut archive, "entry_points.txt")?;

    let (name, version) = check_metadata(&metadata, &file_dist, &file_version, &ctx)?;
    check_wheel_file(&wheel_file, &ctx)?;
    let mut record = parse_record(&String::from_utf8_lossy(&record_file), &ctx)?;
    let (console, gui) = match &entry_points {
        Some(text) => parse_entry_points(&String::from_utf8_lossy(text), target.version.1, &ctx)?,
        None => (Vec::new(), Vec::new()),
    };

    let mut planner = Planner {
        ctx: &ctx,
        target,
        dist_info: &dist_info,
        dist_name: &name,
        plan: LayerPlan::new(),
        record_index: HashMap::new(),
        site_packages: target.site_packages(),
        entry_point_names: console.iter().chain(&gui).map(|s| s.name.clone()).collect(),
    };
    for (i, row) in record.iter().enumerate() {
        planner
            .record_index
            .entry(normalise_record_path(&row.path))
            .or_insert(i);
    }
    for entry in &entries {
        planner.place(entry, &mut archive, &mut record)?;
    }
    for script in console.iter().chain(&gui) {
        planner.launcher(script, &mut record)?;
    }
    planner.generated(
        &format!("{dist_info}.dist-info/REQUESTED"),
        0o644,
        Vec::new(),
        &mut record,
    )?;
    planner.generated(
        &format!("{dist_info}.dist-info/INSTALLER"),
        0o644,
        INSTALLER.as_bytes().to_vec(),
        &mut record,
    )?;

    record.sort();
    let record_path = planner.site_path(&format!("{dist_info}.dist-info/RECORD"))?;
    planner
        .plan
        .bytes(record_path, 0o644, write_record(&record))
        .map_err(|e| ctx.layout("RECORD", e))?;
    Ok(WheelInstall {
        plan: planner.plan,
        name,
        version,
    })
}

struct Ctx<'a> {
    wheel: &'a Path,
}

impl Ctx<'_> {
    fn io(&self, source: io::Error) -> WheelError {
        WheelError::Io {
            wheel: self.wheel.into(),
            source,
        }
    }
    fn zip(&self, source: zip::result::ZipError) -> WheelError {
        WheelError::Zip {
            wheel: self.wheel.into(),
            source,
        }
    }
    fn invalid(&self, what: String) -> WheelError {
        WheelError::Invalid {
            wheel: self.wheel.into(),
            what,
        }
    }
    fn unsafe_entry(&self, entry: &str, why: &'static str) -> WheelError {
        WheelError::UnsafeEntry {
            wheel: self.wheel.into(),
            entry: entry.into(),
            why,
        }
    }
    fn layout(&self, entry: &str, what: impl std::fmt::Display) -> WheelError {
        WheelError::Layout {
            wheel: self.wheel.into(),
            entry: entry.into(),
            what: what.to_string(),
        }
    }
}

/// Builds the plan and keeps RECORD in step with every file it moves.
struct Planner<'a> {
    ctx: &'a Ctx<'a>,
    target: &'a VenvTarget,
    dist_info: &'a str,
    dist_name: &'a str,
    plan: LayerPlan,
    /// Normalised RECORD path → first row with it (uv updates the first match).
    record_index: HashMap<String, usize>,
    site_packages: ImagePath,
    entry_point_names: HashSet<String>,
}

impl Planner<'_> {
    fn site_path(&self, rel: &str) -> Result<ImagePath, WheelError> {
        self.site_packages
            .join(rel)
            .map_err(|e| self.ctx.layout(rel, e))
    }

    fn place(
        &mut self,
        e: &ZipEntry,
        archive: &mut ZipArchive<BufReader<File>>,
        record: &mut [RecordRow],
    ) -> Result<(), WheelError> {
        let dist_info_dir = format!("{}.dist-info/", self.dist_info);
        if let Some(file) = e.name.strip_prefix(&dist_info_dir) {
            // Regenerated (RECORD) or overwritten (INSTALLER, REQUESTED) by the installer.
            if !e.is_dir && matches!(file, "RECORD" | "INSTALLER" | "REQUESTED") {
                return Ok(());
            }
        }
        let data_dir = format!("{}.data", self.dist_info);
        let in_data = e.name.strip_prefix(&data_dir).and_then(|rest| {
            if rest.is_empty() {
                Some("")
            } else {
                rest.strip_prefix('/')
            }
        });
        match in_data {
            None => {
                let dest = self.site_path(&e.name)?;
                self.put(e, dest)
            }
            Some("") => Ok(()), // the .data directory itself is removed after spreading
            Some(rest) => self.place_data(e, rest, archive, record),
        }
    }

    /// Spreads `<dist>.data/<kind>/...` to its scheme directory.
    fn place_data(
        &mut self,
        e: &ZipEntry,
        rest: &str,
        archive: &mut ZipArchive<BufReader<File>>,
        record: &mut [RecordRow],
    ) -> Result<(), WheelError> {
        let (kind, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let base = match kind {
            "data" => self.target.venv.clone(),
            "headers" => self
                .target
                .include()
                .join(self.dist_name)
                .map_err(|err| self.ctx.layout(&e.name, err))?,
            "purelib" | "platlib" => self.site_packages.clone(),
            "scripts" => return self.place_script(e, sub, archive, record),
            other => {
                return Err(self
                    .ctx
                    .invalid(format!("unknown data directory {:?} in {}", other, e.name)))
            }
        };
        if sub.is_empty() {
            if !e.is_dir {
                return Err(self.ctx.invalid(format!("{} must be a directory", e.name)));
            }
            // uv creates the destination even when the subtree is empty.
            return self
                .plan
                .dir(base, 0o755)
                .map_err(|err| self.ctx.layout(&e.name, err));
        }
        let dest = base
            .join(sub)
            .map_err(|err| self.ctx.layout(&e.name, err))?;
        if !e.is_dir {
            let rel = relative_path(&self.site_packages, &dest);
            self.record_row(record, &e.name)?.path = rel;
        }
        self.put(e, dest)
    }

    fn place_script(
        &mut self,
        e: &ZipEntry,
        sub: &str,
        archive: &mut ZipArchive<BufReader<File>>,
        record: &mut [RecordRow],
    ) -> Result<(), WheelError> {
        if sub.is_empty() {
            return Ok(()); // the scripts directory entry itself
        }
        if e.is_dir || sub.contains('/') {
            return Err(self.ctx.invalid(format!(
                "{} is a directory inside .data/scripts; only files are allowed there",
                e.name
            )));
        }
        // A wheel may ship both a script and an entry point of the same name
        // (pip's rule); the entry point wins.
        let stem = sub
            .strip_suffix(".exe")
            .or_else(|| sub.strip_suffix("-script.py"))
            .or_else(|| sub.strip_suffix(".pya"))
            .unwrap_or(sub);
        if self.entry_point_names.contains(stem) {
            return Ok(());
        }
        let dest = self
            .target
            .bin()
            .join(sub)
            .map_err(|err| self.ctx.layout(&e.name, err))?;
        let rel = relative_path(&self.site_packages, &dest);
        let rewritten = rewrite_python_shebang(archive, e, &self.target.python(), self.ctx)?;
        let row = self.record_row(record, &e.name)?;
        row.path = rel;
        match rewritten {
            Some(bytes) => {
                row.hash = Some(record_hash(&bytes));
                row.size = Some(bytes.len() as u64);
                self.plan.bytes(dest, 0o755, bytes)
            }
            None => self
                .plan
                .file(dest, 0o755, e.size, Content::External(e.index)),
        }
        .map_err(|err| self.ctx.layout(&e.name, err))
    }

    fn put(&mut self, e: &ZipEntry, dest: ImagePath) -> Result<(), WheelError> {
        let mode = if e.executable { 0o755 } else { 0o644 };
        let res = if e.is_dir {
            self.plan.dir(dest, 0o755)
        } else {
            self.plan
                .file(dest, mode, e.size, Content::External(e.index))
        };
        res.map_err(|err: PlanError| self.ctx.layout(&e.name, err))
    }

    fn record_row<'r>(
        &self,
        record: &'r mut [RecordRow],
        entry: &str,
    ) -> Result<&'r mut RecordRow, WheelError> {
        match self.record_index.get(entry) {
            Some(&i) => Ok(&mut record[i]),
            None => Err(self.ctx.invalid(format!(
                "RECORD has no row for {entry}; the wheel was built wrongly"
            ))),
        }
    }

    fn launcher(&mut self, script: &Script, record: &mut Vec<RecordRow>) -> Result<(), WheelError> {
        let text = launcher_script(script, &format_shebang(&self.target.python()));
        let dest = self
            .target
            .bin()
            .join(&script.name)
            .map_err(|err| self.ctx.layout(&script.name, err))?;
        if dest.parent().as_ref() != Some(&self.target.bin()) {
            return Err(self.ctx.invalid(format!(
                "entry point name {:?} is not a plain file name",
                script.name
            )));
        }
        record.push(RecordRow {
            path: relative_path(&self.site_packages, &dest),
            hash: Some(record_hash(text.as_bytes())),
            size: Some(text.len() as u64),
        });
        self.plan
            .bytes(dest, 0o755, text.into_bytes())
            .map_err(|err| self.ctx.layout(&script.name, err))
    }

    fn generated(
        &mut self,
        rel: &str,
        mode: u32,
        bytes: Vec<u8>,
        record: &mut Vec<RecordRow>,
    ) -> Result<(), WheelError> {
        record.push(RecordRow {
            path: rel.to_string(),
            hash: Some(record_hash(&bytes)),
            size: Some(bytes.len() as u64),
        });
        let dest = self.site_path(rel)?;
        self.plan
            .bytes(dest, mode, bytes)
            .map_err(|err| self.ctx.layout(rel, err))
    }
}

/// If the script starts with `#!python`, the whole script with its first line
/// replaced by the venv's shebang line. Scripts are small; binaries that do
/// not start with the marker are never read past 8 bytes.
fn rewrite_python_shebang(
    archive: &mut ZipArchive<BufReader<File>>,
    e: &ZipEntry,
    python: &str,
    ctx: &Ctx,
) -> Result<Option<Vec<u8>>, WheelError> {
    let mut file = archive.by_index(e.index).map_err(|err| ctx.zip(err))?;
    let mut script = Vec::with_capacity(8);
    (&mut file)
        .take(8)
        .read_to_end(&mut script)
        .map_err(|err| ctx.io(err))?;
    if script != b"#!python" {
        return Ok(None);
    }
    if e.size > MAX_METADATA_FILE {
        return Err(ctx.invalid(format!(
            "{} is a `#!python` script of {} bytes; that is not a script",
            e.name, e.size
        )));
    }
    file.read_to_end(&mut script).map_err(|err| ctx.io(err))?;
    Ok(Some(replace_first_line(&script, &format_shebang(python))))
}

/// uv 0.13.9 replaces the whole first line, whatever follows `#!python` on it
/// (`#!python3 -u` too), and ends the new line with `\n`; `\r\n`, `\r` and `\n`
/// all end the old one (observed by installing such scripts with uv).
fn replace_first_line(script: &[u8], shebang: &str) -> Vec<u8> {
    let rest = match script.iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(i) if script[i] == b'\r' && script.get(i + 1) == Some(&b'\n') => &script[i + 2..],
        Some(i) => &script[i + 1..],
        None => &[],
    };
    let mut out = Vec::with_capacity(shebang.len() + 1 + rest.len());
    out.extend_from_slice(shebang.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(rest);
    out
}

/// uv's (and distlib's) shebang: `#!<python>`, unless the line would be longer
/// than the kernel's 127 bytes or the path has a space, when `/bin/sh` re-execs it.
pub fn format_shebang(python: &str) -> String {
    if 2 + python.len() + 1 > 127 || python.contains(' ') {
        let quoted = python.replace('\'', r"'\''");
        return format!("#!/bin/sh\n'''exec' '{quoted}' \"$0\" \"$@\"\n' '''");
    }
    format!("#!{python}")
}

/// The launcher uv writes for an entry point (distlib's template without `import re`).
fn launcher_script(script: &Script, shebang: &str) -> String {
    let Script {
        module, function, ..
    } = script;
    let import_name = script.import_name();
    format!(
        r#"{shebang}
# -*- coding: utf-8 -*-
import sys
from {module} import {import_name}
if __name__ == "__main__":
    if sys.argv[0].endswith("-script.pyw"):
        sys.argv[0] = sys.argv[0][:-11]
    elif sys.argv[0].endswith(".exe"):
        sys.argv[0] = sys.argv[0][:-4]
    sys.exit({function}())
"#
    )
}

/// `sha256=<urlsafe base64, no padding>`, as RECORD spells hashes.
fn record_hash(bytes: &[u8]) -> String {
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
    )
}

/// `dest` relative to `base`, with `..` steps, e.g. `../../../bin/uvicorn`.
fn relative_path(base: &ImagePath, dest: &ImagePath) -> String {
    let b: Vec<&str> = base.as_str().split('/').collect();
    let d: Vec<&str> = dest.as_str().split('/').collect();
    let common = b.iter().zip(&d).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<&str> = vec![".."; b.len() - common];
    parts.extend(&d[common..]);
    parts.join("/")
}

/// PEP 503 normalisation: lowercase, runs of `-`, `_`, `.` become one `-`.
pub fn normalise_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.extend(c.to_lowercase());
            in_sep = false;
        }
    }
    out
}

/// (normalised name, version) from `name-version[-build]-py-abi-plat.whl`.
fn parse_filename(file_name: &str) -> Option<(String, String)> {
    let stem = file_name.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    if !(parts.len() == 5 || parts.len() == 6) || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some((normalise_name(parts[0]), parts[1].to_string()))
}

/// Lists and checks every entry: no escapes, no symlinks, no duplicates.
fn list_entries(
    archive: &mut ZipArchive<BufReader<File>>,
    ctx: &Ctx,
) -> Result<Vec<ZipEntry>, WheelError> {
    let mut out = Vec::with_capacity(archive.len());
    let mut seen_files = HashSet::new();
    let mut seen_dirs = HashSet::new();
    for index in 0..archive.len() {
        let file = archive.by_index_raw(index).map_err(|e| ctx.zip(e))?;
        let raw = String::from_utf8_lossy(file.name_raw()).into_owned();
        let is_dir = file.is_dir();
        if file.is_symlink() {
            return Err(ctx.unsafe_entry(&raw, "symlinks are not allowed in wheels"));
        }
        if file.encrypted() {
            return Err(ctx.unsafe_entry(&raw, "the entry is encrypted"));
        }
        let name = check_entry_name(&raw).map_err(|why| ctx.unsafe_entry(&raw, why))?;
        // A directory listed twice is harmless; a file listed twice, or a name
        // that is both, would make the install depend on entry order.
        let clash = if is_dir {
            seen_dirs.insert(name.clone());
            seen_files.contains(&name)
        } else {
            !seen_files.insert(name.clone()) || seen_dirs.contains(&name)
        };
        if clash {
            return Err(ctx.unsafe_entry(&raw, "the name appears twice in the archive"));
        }
        let executable = file.unix_mode().is_some_and(|m| m & 0o111 != 0);
        out.push(ZipEntry {
            index,
            name,
            is_dir,
            size: file.size(),
            executable,
        });
    }
    Ok(out)
}

/// The entry name with `.` and empty components removed; refuses anything
/// that could land outside the install directories.
fn check_entry_name(raw: &str) -> Result<String, &'static str> {
    if raw.contains('\0') {
        return Err("the name contains NUL");
    }
    if raw.starts_with('/') || raw.starts_with('\\') {
        return Err("absolute paths are not allowed");
    }
    if raw.len() >= 2 && raw.as_bytes()[1] == b':' {
        return Err("drive-letter paths are not allowed");
    }
    // Windows tools write `\` as a separator: `a\..\..\x` must not slip through.
    if raw.split(['/', '\\']).any(|c| c == "..") {
        return Err("`..` components are not allowed");
    }
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() {
        return Err("the name is empty");
    }
    Ok(parts.join("/"))
}

fn normalise_record_path(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// The one top-level `*.dist-info` directory, whose name must match the file name's.
fn find_dist_info(entries: &[ZipEntry], file_dist: &str, ctx: &Ctx) -> Result<String, WheelError> {
    let mut found: Vec<&str> = entries
        .iter()
        .filter_map(|e| {
            let top = e.name.split('/').next()?;
            let is_inside = e.name.len() > top.len() || e.is_dir;
            top.strip_suffix(".dist-info").filter(|_| is_inside)
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [one] => {
            let dist = one.split('-').next().unwrap_or_default();
            if normalise_name(dist) != file_dist {
                return Err(ctx.invalid(format!(
                    "{one}.dist-info does not belong to {file_dist}, the name in the file name"
                )));
            }
            Ok(one.to_string())
        }
        [] => Err(ctx.invalid("there is no .dist-info directory".into())),
        many => Err(ctx.invalid(format!(
            "there are several .dist-info directories: {}",
            many.join(", ")
        ))),
    }
}

fn read_small(
    archive: &mut ZipArchive<BufReader<File>>,
    e: &ZipEntry,
    ctx: &Ctx,
) -> Result<Vec<u8>, WheelError> {
    if e.size > MAX_METADATA_FILE {
        return Err(ctx.invalid(format!(
            "{} is {} bytes; metadata files are never that big",
            e.name, e.size
        )));
    }
    let mut file = archive.by_index(e.index).map_err(|err| ctx.zip(err))?;
    let mut buf = Vec::with_capacity(e.size as usize);
    file.read_to_end(&mut buf).map_err(|err| ctx.io(err))?;
    Ok(buf)
}

/// Headers of an email-style file (METADATA, WHEEL): first value of each key.
fn email_headers(text: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            break; // the body starts
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| out.get_mut(k)) {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        last = None;
        if let Some((k, v)) = line.split_once(':') {
            if k.contains(' ') || out.contains_key(k) {
                continue;
            }
            out.insert(k.to_string(), v.trim().to_string());
            last = Some(k.to_string());
        }
    }
    out
}

/// METADATA's Name and Version must be the file name's (a local version may be dropped).
fn check_metadata(
    metadata: &[u8],
    file_dist: &str,
    file_version: &str,
    ctx: &Ctx,
) -> Result<(String, String), WheelError> {
    let headers = email_headers(&String::from_utf8_lossy(metadata));
    let field = |k: &str| {
        headers
            .get(k)
            .cloned()
            .ok_or_else(|| ctx.invalid(format!("METADATA has no {k} field")))
    };
    let name = normalise_name(&field("Name")?);
    let version = field("Version")?;
    if name != file_dist {
        return Err(ctx.invalid(format!(
            "METADATA names {name:?} but the file name says {file_dist:?}"
        )));
    }
    let parse = |v: &str| {
        pep440_rs::Version::from_str(v)
            .map_err(|e| ctx.invalid(format!("version {v:?} is not PEP 440: {e}")))
    };
    let (meta_v, file_v) = (parse(&version)?, parse(file_version)?);
    if meta_v != file_v && meta_v != file_v.clone().without_local() {
        return Err(ctx.invalid(format!(
            "METADATA has version {version} but the file name says {file_version}"
        )));
    }
    Ok((name, version))
}

/// Wheel-Version must be 1.x (0.1 is tolerated as pip and uv do). Root-Is-Purelib
/// only picks purelib or platlib, which are the same directory in a venv.
fn check_wheel_file(text: &[u8], ctx: &Ctx) -> Result<(), WheelError> {
    let headers = email_headers(&String::from_utf8_lossy(text));
    let version = headers
        .get("Wheel-Version")
        .ok_or_else(|| ctx.invalid("WHEEL has no Wheel-Version".into()))?;
    match version.split_once('.') {
        Some(("1", _)) | Some(("0", "1")) => Ok(()),
        Some((major, _)) => Err(ctx.invalid(format!(
            "Wheel-Version {version} (major {major}) is not supported; only 1.x is"
        ))),
        None => Err(ctx.invalid(format!("Wheel-Version {version:?} is not `major.minor`"))),
    }
}

/// RECORD as CSV (RFC 4180 quoting): path, hash, size; leading `/` dropped as uv does.
fn parse_record(text: &str, ctx: &Ctx) -> Result<Vec<RecordRow>, WheelError> {
    let mut rows = Vec::new();
    for fields in csv_rows(text).map_err(|what| ctx.invalid(format!("RECORD: {what}")))? {
        let get = |i: usize| fields.get(i).filter(|f| !f.is_empty()).cloned();
        let size = match get(2) {
            Some(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| ctx.invalid(format!("RECORD: size {s:?} is not a number")))?,
            ),
            None => None,
        };
        let path = fields
            .first()
            .map(|p| p.trim_start_matches('/').to_string())
            .unwrap_or_default();
        rows.push(RecordRow {
            path,
            hash: get(1),
            size,
        });
    }
    Ok(rows)
}

fn csv_rows(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut line_empty = true;
        while let Some(c) = chars.next() {
            if quoted {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => quoted = false,
                    c => field.push(c),
                }
                continue;
            }
            match c {
                '"' => {
                    quoted = true;
                    line_empty = false;
                }
                ',' => {
                    fields.push(std::mem::take(&mut field));
                    line_empty = false;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' | '\r' => break,
                c => {
                    field.push(c);
                    line_empty = false;
                }
            }
        }
        if quoted {
            return Err("a quoted field is not closed".into());
        }
        if !line_empty {
            fields.push(field);
            rows.push(fields);
        }
    }
    Ok(rows)
}

/// RECORD text as uv's csv writer produces it: `\n` line ends, fields quoted
/// only when they hold a comma, quote or line break.
fn write_record(rows: &[RecordRow]) -> Vec<u8> {
    fn field(out: &mut String, s: &str) {
        if s.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&s.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(s);
        }
    }
    let mut out = String::new();
    for row in rows {
        field(&mut out, &row.path);
        out.push(',');
        field(&mut out, row.hash.as_deref().unwrap_or(""));
        out.push(',');
        if let Some(size) = row.size {
            out.push_str(&size.to_string());
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// `[console_scripts]` and `[gui_scripts]`, read like uv's case-sensitive,
/// `=`-only INI parser. pip's `pip3.N` launchers are fixed up as uv does.
fn parse_entry_points(
    text: &str,
    python_minor: u32,
    ctx: &Ctx,
) -> Result<(Vec<Script>, Vec<Script>), WheelError> {
    let mut sections: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = raw.find(['#', ';']).map_or(raw, |i| &raw[..i]).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            sections.entry(name.trim().to_string()).or_default();
            continue;
        }
        let Some(section) = &current else {
            return Err(ctx.invalid(format!(
                "entry_points.txt: {line:?} comes before any [section]"
            )));
        };
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
            None => (line, None),
        };
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.to_string(), value);
    }
    let scripts = |section: &str| -> Result<Vec<Script>, WheelError> {
        let mut out = Vec::new();
        for (name, value) in sections.get(section).into_iter().flatten() {
            let value = value.as_deref().ok_or_else(|| {
                ctx.invalid(format!(
                    "entry_points.txt: [{section}] key {name} must have a value"
                ))
            })?;
            let script = parse_script(name, value).ok_or_else(|| {
                ctx.invalid(format!(
                    "entry_points.txt: invalid entry point {name} = {value:?}"
                ))
            })?;
            if is_reserved_name(name) {
                return Err(ctx.invalid(format!(
                    "entry point {name:?} would replace the venv's interpreter link"
                )));
            }
            out.push(script);
        }
        Ok(out)
    };
    let mut console = scripts("console_scripts")?;
    let gui = scripts("gui_scripts")?;
    // Old pip wheels ship a `pip3.N` for the Python that built them; drop it
    // and add the one for the target's Python.
    console.retain(
        |s| !matches!(s.name.split_once('.'), Some(("pip3", n)) if n.parse::<u8>().is_ok()),
    );
    if let Some(pip3) = console.iter().find(|s| s.name == "pip3").cloned() {
        console.push(Script {
            name: format!("pip3.{python_minor}"),
            ..pip3
        });
    }
    Ok((console, gui))
}

fn is_reserved_name(name: &str) -> bool {
    matches!(name, "python" | "pythonw" | "python3")
        || name
            .strip_prefix("python3.")
            .is_some_and(|n| n.parse::<u8>().is_ok())
}

/// `module:function[extras]`, with the spaces the entry points spec allows.
fn parse_script(name: &str, value: &str) -> Option<Script> {
    let ident = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let (module, rest) = value.split_once(':')?;
    let module = module.trim_end();
    let rest = rest.trim_start();
    let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
    let (function, tail) = rest.split_at(end);
    if module.is_empty() || !module.chars().all(ident) || function.is_empty() {
        return None;
    }
    let tail = tail.trim();
    if !tail.is_empty() {
        let extras = tail.strip_prefix('[')?.strip_suffix(']')?;
        if extras.trim().is_empty() {
            return None;
        }
    }
    Some(Script {
        name: name.to_string(),
        module: module.to_string(),
        function: function.to_string(),
    })
}

/// Streams entry `i` of a wheel for the layer writer, checking it against the
/// sha256 the wheel's RECORD lists for it when the stream ends.
pub struct WheelContent {
    wheel: PathBuf,
    archive: ZipArchive<BufReader<File>>,
    /// Each entry's sha256 from RECORD; `None` where RECORD's hash is malformed.
    expected: HashMap<usize, Option<Digest>>,
}

impl WheelContent {
    pub fn open(wheel: &Path) -> Result<Self, WheelError> {
        let ctx = Ctx { wheel };
        let file = File::open(wheel).map_err(|source| ctx.io(source))?;
        let mut archive =
            ZipArchive::new(BufReader::new(file)).map_err(|source| ctx.zip(source))?;
        let entries = list_entries(&mut archive, &ctx)?;
        let record = entries.iter().find(|e| {
            !e.is_dir && e.name.ends_with(".dist-info/RECORD") && e.name.matches('/').count() == 1
        });
        let mut expected = HashMap::new();
        if let Some(record) = record {
            let text = read_small(&mut archive, record, &ctx)?;
            let index: HashMap<&str, usize> =
                entries.iter().map(|e| (e.name.as_str(), e.index)).collect();
            for row in parse_record(&String::from_utf8_lossy(&text), &ctx)? {
                let digest = row
                    .hash
                    .as_deref()
                    .and_then(|h| h.strip_prefix("sha256="))
                    .and_then(|b64| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(b64.trim_end_matches('='))
                            .ok()
                    });
                if let (Some(digest), Some(&i)) =
                    (digest, index.get(normalise_record_path(&row.path).as_str()))
                {
                    let digest = (digest.len() == 32)
                        .then(|| Digest::from_hex(&hex::encode(&digest)).ok())
                        .flatten();
                    expected.insert(i, digest);
                }
            }
        }
        Ok(WheelContent {
            wheel: wheel.into(),
            archive,
            expected,
        })
    }
}

impl ExternalContent for WheelContent {
    fn open(&mut self, index: usize) -> io::Result<Box<dyn Read + '_>> {
        let wheel = self.wheel.display().to_string();
        let file = self
            .archive
            .by_index(index)
            .map_err(|e| io::Error::other(format!("{wheel}: entry {index}: {e}")))?;
        let name = file.name().map(|n| n.into_owned()).unwrap_or_default();
        match self.expected.get(&index) {
            None => Ok(Box::new(file)),
            Some(Some(digest)) => Ok(Box::new(
                VerifyingReader::new(
                    file,
                    digest.clone(),
                    None,
                    format!("{wheel}: {name} (sha256 from the wheel's RECORD)"),
                )
                .with_hint("the wheel is corrupt, download it again"),
            )),
            Some(None) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{wheel}: {name}: the wheel's RECORD gives a malformed sha256; the wheel is corrupt, download it again"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            wheel: Path::new("demo-1.0-py3-none-any.whl"),
        }
    }

    #[test]
    fn shebang_is_plain_unless_long_or_spaced() {
        assert_eq!(
            format_shebang("/app/.venv/bin/python"),
            "#!/app/.venv/bin/python"
        );
        assert_eq!(
            format_shebang("/my app/bin/python"),
            "#!/bin/sh\n'''exec' '/my app/bin/python' \"$0\" \"$@\"\n' '''"
        );
        let long = format!("/{}/bin/python", "x".repeat(120));
        assert!(format_shebang(&long).starts_with("#!/bin/sh\n'''exec' '/xxx"));
        assert_eq!(format_shebang("/it's/python"), "#!/it's/python");
        assert_eq!(
            format_shebang("/it's here/python"),
            "#!/bin/sh\n'''exec' '/it'\\''s here/python' \"$0\" \"$@\"\n' '''"
        );
    }

    #[test]
    fn python_scripts_lose_their_whole_first_line() {
        let sb = "#!/v/bin/python";
        assert_eq!(
            replace_first_line(b"#!python\nprint(1)\n", sb),
            b"#!/v/bin/python\nprint(1)\n"
        );
        assert_eq!(
            replace_first_line(b"#!pythonw -E\r\nx\r\n", sb),
            b"#!/v/bin/python\nx\r\n"
        );
        assert_eq!(
            replace_first_line(b"#!python3 -u\rx\n", sb),
            b"#!/v/bin/python\nx\n"
        );
        assert_eq!(replace_first_line(b"#!python", sb), b"#!/v/bin/python\n");
    }

    #[test]
    fn launcher_imports_the_first_attribute_and_calls_the_whole_path() {
        let s = parse_script("tool", "pkg.cli : app.main [extra1, extra2]").unwrap();
        assert_eq!(
            (s.module.as_str(), s.function.as_str(), s.import_name()),
            ("pkg.cli", "app.main", "app")
        );
        let text = launcher_script(&s, "#!/v/bin/python");
        assert!(text.starts_with(
            "#!/v/bin/python\n# -*- coding: utf-8 -*-\nimport sys\nfrom pkg.cli import app\n"
        ));
        assert!(text.ends_with("    sys.exit(app.main())\n"));
    }

    #[test]
    fn invalid_entry_points_are_refused() {
        for bad in [
            "",
            ":main",
            "pkg",
            "pkg:",
            "pkg:main [",
            "pkg:main []",
            "a b:main",
        ] {
            assert!(parse_script("x", bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn entry_points_ini_is_case_sensitive_and_fixes_pip3_launchers() {
        let ini = "[console_scripts]\nTool = a:b\npip3 = pip:main\npip3.8 = pip:main\n# comment\n[gui_scripts]\ng = a:gui\n[other]\nx = y:z\n";
        let (console, gui) = parse_entry_points(ini, 12, &ctx()).unwrap();
        let names: Vec<&str> = console.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Tool", "pip3", "pip3.12"]);
        assert_eq!(gui.len(), 1);
        assert!(parse_entry_points("[console_scripts]\npython3.12 = a:b\n", 12, &ctx()).is_err());
        assert!(parse_entry_points("[console_scripts]\nnovalue\n", 12, &ctx()).is_err());
    }

    #[test]
    fn record_round_trips_with_quoting_and_uv_order() {
        let text =
            "b.py,sha256=x,3\n\"a,b.py\",sha256=y,1\r\npkg-1.dist-info/RECORD,,\n/abs.py,,\n";
        let mut rows = parse_record(text, &ctx()).unwrap();
        assert_eq!(rows[1].path, "a,b.py");
        assert_eq!(rows[3].path, "abs.py");
        rows.sort();
        assert_eq!(
            String::from_utf8(write_record(&rows)).unwrap(),
            "\"a,b.py\",sha256=y,1\nabs.py,,\nb.py,sha256=x,3\npkg-1.dist-info/RECORD,,\n"
        );
        assert!(parse_record("a,sha256=x,big\n", &ctx()).is_err());
    }

    #[test]
    fn entry_names_that_escape_are_refused() {
        assert_eq!(check_entry_name("./pkg//mod.py").unwrap(), "pkg/mod.py");
        assert_eq!(check_entry_name("pkg/").unwrap(), "pkg");
        for bad in [
            "/etc/passwd",
            "../x",
            "pkg/../../x",
            "a\\..\\..\\x",
            "\\x",
            "C:/x",
            "a\0b",
        ] {
            assert!(check_entry_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_relative_paths() {
        assert_eq!(normalise_name("Foo.Bar__baz"), "foo-bar-baz");
        assert_eq!(
            parse_filename("Foo_Bar-1.0-1-py3-none-any.whl"),
            Some(("foo-bar".into(), "1.0".into()))
        );
        assert_eq!(parse_filename("foo-1.0.whl"), None);
        let sp = ImagePath::new("v/lib/python3.11/site-packages").unwrap();
        assert_eq!(
            relative_path(&sp, &ImagePath::new("v/bin/x").unwrap()),
            "../../../bin/x"
        );
        assert_eq!(
            relative_path(
                &sp,
                &ImagePath::new("v/lib/python3.11/site-packages/a/b").unwrap()
            ),
            "a/b"
        );
    }

    #[test]
    fn wheel_version_must_be_major_one() {
        assert!(check_wheel_file(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n", &ctx()).is_ok());
        assert!(check_wheel_file(b"Wheel-Version: 1.9\n", &ctx()).is_ok());
        assert!(check_wheel_file(b"Wheel-Version: 2.0\n", &ctx()).is_err());
        assert!(check_wheel_file(b"Root-Is-Purelib: true\n", &ctx()).is_err());
    }

    #[test]
    fn metadata_must_match_the_file_name() {
        let m = b"Metadata-Version: 2.1\nName: Demo_Pkg\nVersion: 1.0\n\nName: body\n";
        assert_eq!(
            check_metadata(m, "demo-pkg", "1.0", &ctx()).unwrap(),
            ("demo-pkg".into(), "1.0".into())
        );
        assert!(check_metadata(m, "demo-pkg", "1.0+local", &ctx()).is_ok());
        assert!(check_metadata(m, "other", "1.0", &ctx()).is_err());
        assert!(check_metadata(m, "demo-pkg", "1.1", &ctx()).is_err());
    }

    fn write_wheel(dir: &Path, files: &[(&str, &[u8], u32)]) -> PathBuf {
        use std::io::Write as _;
        let path = dir.join("demo-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let mut record = String::new();
        for (name, bytes, mode) in files {
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
            zip.start_file(*name, opts).unwrap();
            zip.write_all(bytes).unwrap();
            record.push_str(&format!("{name},{},{}\n", record_hash(bytes), bytes.len()));
        }
        record.push_str("demo-1.0.dist-info/RECORD,,\n");
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file("demo-1.0.dist-info/RECORD", opts).unwrap();
        zip.write_all(record.as_bytes()).unwrap();
        zip.finish().unwrap();
        path
    }

    #[test]
    fn plan_streams_wheel_files_and_generates_only_small_ones() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = write_wheel(
            dir.path(),
            &[
                ("demo/__init__.py", b"x = 1\n", 0o644),
                ("demo/run.so", b"\x7fELF", 0o755),
                ("demo-1.0.data/scripts/go", b"#!python\nprint(1)\n", 0o644),
                (
                    "demo-1.0.dist-info/METADATA",
                    b"Name: demo\nVersion: 1.0\n",
                    0o644,
                ),
                ("demo-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n", 0o644),
                (
                    "demo-1.0.dist-info/entry_points.txt",
                    b"[console_scripts]\ndemo = demo:main\n",
                    0o644,
                ),
            ],
        );
        let target = VenvTarget {
            venv: ImagePath::new("app/.venv").unwrap(),
            interpreter: "/usr/bin/python3.11".into(),
            version: (3, 11, 4),
        };
        let install = plan_install(&wheel, &target).unwrap();
        assert_eq!(
            (install.name.as_str(), install.version.as_str()),
            ("demo", "1.0")
        );
        let get = |p: &str| {
            let path = ImagePath::new(&format!("app/.venv/{p}")).unwrap();
            install
                .plan
                .get(&path)
                .unwrap_or_else(|| panic!("{p} not planned"))
                .clone()
        };
        let sp = "lib/python3.11/site-packages";
        let init = get(&format!("{sp}/demo/__init__.py"));
        assert_eq!(
            (init.mode, init.kind),
            (
                0o644,
                crate::layer::EntryKind::File {
                    size: 6,
                    content: Content::External(0)
                }
            )
        );
        assert_eq!(get(&format!("{sp}/demo/run.so")).mode, 0o755);
        let script = get("bin/go");
        assert_eq!(script.mode, 0o755);
        assert!(
            matches!(script.kind, crate::layer::EntryKind::File { content: Content::Bytes(ref b), .. } if b.starts_with(b"#!/app/.venv/bin/python\nprint"))
        );
        assert!(matches!(
            get("bin/demo").kind,
            crate::layer::EntryKind::File {
                content: Content::Bytes(_),
                ..
            }
        ));
        let record = match get(&format!("{sp}/demo-1.0.dist-info/RECORD")).kind {
            crate::layer::EntryKind::File {
                content: Content::Bytes(b),
                ..
            } => String::from_utf8(b).unwrap(),
            other => panic!("RECORD is {other:?}"),
        };
        let paths: Vec<&str> = record
            .lines()
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "../../../bin/demo",
                "../../../bin/go",
                "demo-1.0.dist-info/INSTALLER",
                "demo-1.0.dist-info/METADATA",
                "demo-1.0.dist-info/RECORD",
                "demo-1.0.dist-info/REQUESTED",
                "demo-1.0.dist-info/WHEEL",
                "demo-1.0.dist-info/entry_points.txt",
                "demo/__init__.py",
                "demo/run.so",
            ]
        );
        assert!(install
            .plan
            .get(&ImagePath::new("app/.venv/lib/python3.11/site-packages/demo-1.0.data").unwrap())
            .is_none());
    }

    #[test]
    fn mismatched_metadata_names_the_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = write_wheel(
            dir.path(),
            &[
                (
                    "demo-1.0.dist-info/METADATA",
                    b"Name: other\nVersion: 1.0\n",
                    0o644,
                ),
                ("demo-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n", 0o644),
            ],
        );
        let target = VenvTarget {
            venv: ImagePath::new("app/.venv").unwrap(),
            interpreter: "/usr/bin/python3.11".into(),
            version: (3, 11, 4),
        };
        let err = plan_install(&wheel, &target).unwrap_err().to_string();
        assert!(
            err.contains("demo-1.0-py3-none-any.whl") && err.contains("other"),
            "{err}"
        );
    }
}
