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
//!
//! The parts, in the order an install uses them:
//! - [`archive`]: the zip's entries, checked, and [`WheelContent`], which streams them;
//! - [`metadata`]: the `.dist-info` directory, METADATA and WHEEL;
//! - [`record`]: RECORD, read and written with the `csv` crate;
//! - [`scripts`]: entry points, launchers and `#!python` shebangs;
//! - [`plan`]: where each entry lands in the venv.
//!
//! This file holds the error type and [`plan_install`], which runs the parts.

mod archive;
mod metadata;
mod plan;
mod record;
mod scripts;

pub use archive::WheelContent;
pub use scripts::format_shebang;

use crate::layer::path::InvalidImagePath;
use crate::layer::plan::PlanError;
use crate::layer::LayerPlan;
use crate::python::tags::{TagError, WheelFilename};
use crate::python::venv::VenvTarget;
use archive::{read_small, Archive, ZipEntry};
use metadata::{check_metadata, check_wheel_file, find_dist_info};
use plan::Planner;
use record::{check_record_covers, normalise_record_path, parse_record};
/// RECORD's one writer, for installed wheels and the wheels [`super::project`] builds.
pub(crate) use record::{record_hash, write_record, RecordRow};
use scripts::parse_entry_points;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// Written to `INSTALLER`, without a newline, exactly as uv does.
pub const INSTALLER: &str = "uv";

#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    #[error("cannot read wheel {wheel}")]
    Io {
        wheel: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("wheel {wheel} is not a readable zip archive; delete it and download it again")]
    Zip {
        wheel: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("cannot open entry {index} of wheel {wheel}; delete it and download it again")]
    Entry {
        wheel: PathBuf,
        index: usize,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("{wheel}: the file name is not `name-version[-build]-python-abi-platform.whl`")]
    Filename {
        wheel: PathBuf,
        #[source]
        source: TagError,
    },
    #[error("wheel {wheel} has an unsafe entry {entry:?}: {why}; refusing to install it")]
    UnsafeEntry {
        wheel: PathBuf,
        entry: String,
        why: &'static str,
    },
    #[error("wheel {wheel} is invalid: {what}")]
    Invalid { wheel: PathBuf, what: String },
    #[error("wheel {wheel} is invalid: METADATA's Name {name:?} is not a valid package name")]
    Name {
        wheel: PathBuf,
        name: String,
        #[source]
        source: pep508_rs::InvalidNameError,
    },
    #[error("wheel {wheel} is invalid: version {version:?} is not PEP 440")]
    Version {
        wheel: PathBuf,
        version: String,
        #[source]
        source: pep440_rs::VersionParseError,
    },
    #[error("wheel {wheel} is invalid: RECORD is not readable CSV")]
    Record {
        wheel: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("wheel {wheel}: entry {entry:?} cannot be placed in the layer")]
    Place {
        wheel: PathBuf,
        entry: String,
        #[source]
        source: PlanError,
    },
    #[error("wheel {wheel}: entry {entry:?} has no valid path in the image")]
    Path {
        wheel: PathBuf,
        entry: String,
        #[source]
        source: InvalidImagePath,
    },
    #[error(
        "wheel {wheel}: {entry} {why}; the wheel is incomplete or altered, refusing to install it"
    )]
    RecordMismatch {
        wheel: PathBuf,
        entry: String,
        why: &'static str,
    },
    #[error("{wheel}: {entry} does not match the sha256 in the wheel's RECORD; the wheel is corrupt, download it again")]
    Corrupt { wheel: PathBuf, entry: String },
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

/// Plans the install of `wheel` into `target`'s venv, reading only the zip
/// directory and the small metadata files.
pub fn plan_install(wheel: &Path, target: &VenvTarget) -> Result<WheelInstall, WheelError> {
    let ctx = Ctx { wheel };
    let file_name = wheel
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let file = WheelFilename::parse(file_name).map_err(|source| WheelError::Filename {
        wheel: wheel.into(),
        source,
    })?;

    let (mut archive, entries) = archive::open(&ctx)?;
    let dist_info = find_dist_info(&entries, &file.name, &ctx)?;
    let by_name: HashMap<&str, &ZipEntry> = entries
        .iter()
        .filter(|e| !e.is_dir)
        .map(|e| (e.name.as_str(), e))
        .collect();
    let read = |archive: &mut Archive, file: &str| -> Result<Option<Vec<u8>>, WheelError> {
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

    let (name, version) = check_metadata(&metadata, &file.name, &file.version, &ctx)?;
    check_wheel_file(&wheel_file, &ctx)?;
    let mut record = parse_record(&record_file, &ctx)?;
    let files: Vec<&str> = entries
        .iter()
        .filter(|e| !e.is_dir)
        .map(|e| e.name.as_str())
        .collect();
    check_record_covers(&record, &files, &dist_info, &ctx)?;
    let (console, gui) = match &entry_points {
        Some(text) => parse_entry_points(&String::from_utf8_lossy(text), target.version.1, &ctx)?,
        None => (Vec::new(), Vec::new()),
    };

    let mut planner = Planner {
        ctx: &ctx,
        target,
        dist_info: &dist_info,
        dist_name: name.as_ref(),
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
        .map_err(|e| ctx.place("RECORD", e))?;
    Ok(WheelInstall {
        plan: planner.plan,
        name: name.to_string(),
        version,
    })
}

/// The METADATA, WHEEL, RECORD and entry_points.txt readers on one input,
/// the first byte picking which, for `crate::fuzzing`'s `dist_info` target.
/// A RECORD that reads must read back the same after it is written.
pub(crate) fn fuzz_dist_info(data: &[u8]) {
    let ctx = Ctx {
        wheel: Path::new("demo-1.0-py3-none-any.whl"),
    };
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let name = <pep508_rs::PackageName as std::str::FromStr>::from_str("demo")
                .expect("a valid name");
            let _ = check_metadata(rest, &name, "1.0", &ctx);
        }
        1 => {
            let _ = check_wheel_file(rest, &ctx);
        }
        2 => {
            let Ok(rows) = parse_record(rest, &ctx) else {
                return;
            };
            let written = write_record(&rows);
            let again = parse_record(&written, &ctx).expect("a RECORD we wrote reads back");
            assert_eq!(again, rows, "RECORD changed through a write and a read");
            let files: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
            let _ = check_record_covers(&rows, &files, "demo-1.0", &ctx);
        }
        _ => {
            let _ = parse_entry_points(&String::from_utf8_lossy(rest), 12, &ctx);
        }
    }
}

/// The wheel being read, for errors that name it.
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
    fn record(&self, source: csv::Error) -> WheelError {
        WheelError::Record {
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
    fn record_mismatch(&self, entry: &str, why: &'static str) -> WheelError {
        WheelError::RecordMismatch {
            wheel: self.wheel.into(),
            entry: entry.into(),
            why,
        }
    }
    fn unsafe_entry(&self, entry: &str, why: &'static str) -> WheelError {
        WheelError::UnsafeEntry {
            wheel: self.wheel.into(),
            entry: entry.into(),
            why,
        }
    }
    fn place(&self, entry: &str, source: PlanError) -> WheelError {
        WheelError::Place {
            wheel: self.wheel.into(),
            entry: entry.into(),
            source,
        }
    }
    fn path(&self, entry: &str, source: InvalidImagePath) -> WheelError {
        WheelError::Path {
            wheel: self.wheel.into(),
            entry: entry.into(),
            source,
        }
    }
}

#[cfg(test)]
fn test_ctx() -> Ctx<'static> {
    Ctx {
        wheel: Path::new("demo-1.0-py3-none-any.whl"),
    }
}

#[cfg(test)]
mod tests {
    use super::record::record_hash;
    use super::*;
    use crate::layer::{Content, EntryKind, ImagePath};
    use std::fs::File;

    /// One wheel entry: its name, contents and mode bits.
    type Entry = (&'static str, &'static [u8], u32);

    /// The `METADATA` of the `demo-1.0` wheel every test builds.
    const DEMO_METADATA: Entry = (
        "demo-1.0.dist-info/METADATA",
        b"Name: demo\nVersion: 1.0\n",
        0o644,
    );
    /// The `WHEEL` file of the `demo-1.0` wheel.
    const DEMO_WHEEL_FILE: Entry = ("demo-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n", 0o644);

    fn write_wheel(dir: &Path, files: &[(&str, &[u8], u32)]) -> PathBuf {
        write_wheel_storing(dir, files, &[])
    }

    /// A wheel whose entries are deflated, except those named in `stored`.
    fn write_wheel_storing(dir: &Path, files: &[(&str, &[u8], u32)], stored: &[&str]) -> PathBuf {
        use std::io::Write as _;
        let path = dir.join("demo-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let mut record = String::new();
        for (name, bytes, mode) in files {
            let method = if stored.contains(name) {
                zip::CompressionMethod::Stored
            } else {
                zip::CompressionMethod::Deflated
            };
            let opts = zip::write::SimpleFileOptions::default()
                .unix_permissions(*mode)
                .compression_method(method);
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

    fn target() -> VenvTarget {
        VenvTarget {
            venv: ImagePath::new("app/.venv").unwrap(),
            interpreter: "/usr/bin/python3.11".into(),
            version: (3, 11, 4),
        }
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
                DEMO_METADATA,
                DEMO_WHEEL_FILE,
                (
                    "demo-1.0.dist-info/entry_points.txt",
                    b"[console_scripts]\ndemo = demo:main\n",
                    0o644,
                ),
            ],
        );
        let install = plan_install(&wheel, &target()).unwrap();
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
                EntryKind::File {
                    size: 6,
                    content: Content::External(0)
                }
            )
        );
        assert_eq!(get(&format!("{sp}/demo/run.so")).mode, 0o755);
        let script = get("bin/go");
        assert_eq!(script.mode, 0o755);
        assert!(
            matches!(script.kind, EntryKind::File { content: Content::Bytes(ref b), .. } if b.starts_with(b"#!/app/.venv/bin/python\nprint"))
        );
        assert!(matches!(
            get("bin/demo").kind,
            EntryKind::File {
                content: Content::Bytes(_),
                ..
            }
        ));
        let record = match get(&format!("{sp}/demo-1.0.dist-info/RECORD")).kind {
            EntryKind::File {
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
                DEMO_WHEEL_FILE,
            ],
        );
        let err = plan_install(&wheel, &target()).unwrap_err().to_string();
        assert!(
            err.contains("demo-1.0-py3-none-any.whl") && err.contains("other"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_file_name_is_refused_before_the_archive_is_opened() {
        let err = plan_install(Path::new("/nonexistent/foo-1.0.whl"), &target()).unwrap_err();
        assert!(matches!(err, WheelError::Filename { .. }), "{err}");
    }

    fn spliceable_wheel(dir: &Path, big: &[u8]) -> PathBuf {
        write_wheel_storing(
            dir,
            &[
                ("demo/__init__.py", b"x = 1\n", 0o644),
                ("demo/big.py", big, 0o644),
                ("demo/stored.txt", b"stored, not deflated\n", 0o644),
                ("demo/empty.txt", b"", 0o644),
                ("demo-1.0.data/scripts/go", b"#!python\nprint(1)\n", 0o644),
                ("demo-1.0.data/scripts/plain", b"#!/bin/sh\necho\n", 0o755),
                DEMO_METADATA,
                DEMO_WHEEL_FILE,
            ],
            &["demo/stored.txt"],
        )
    }

    fn big_source() -> Vec<u8> {
        (0..4000)
            .flat_map(|i| format!("def f{i}(x):\n    return x * {i}\n").into_bytes())
            .collect()
    }

    /// A spliceable wheel planned for install: the temporary directory that
    /// holds it (keep it alive), the big file it deflates, the wheel, its plan.
    fn planned_spliceable_wheel() -> (tempfile::TempDir, Vec<u8>, PathBuf, LayerPlan) {
        let dir = tempfile::tempdir().unwrap();
        let big = big_source();
        let wheel = spliceable_wheel(dir.path(), &big);
        let plan = plan_install(&wheel, &target()).unwrap().plan;
        (dir, big, wheel, plan)
    }

    #[test]
    fn a_spliced_layer_unpacks_to_the_tar_the_compressing_writer_makes() {
        use crate::digest::Digest;
        use crate::layer::tar::{write_layer, write_tar};
        use std::io::Read as _;
        let (_dir, big, wheel, plan) = planned_spliceable_wheel();
        let content = || WheelContent::open(&wheel).unwrap();

        let tar = write_tar(&plan, 0, &mut content(), Vec::new()).unwrap();
        let (layer, blob) = write_layer(&plan, 0, &mut content(), Vec::new()).unwrap();
        let mut unpacked = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut unpacked)
            .unwrap();
        assert!(unpacked == tar, "the spliced layer is not the same tar");
        assert_eq!(layer.diff_id, Digest::of_bytes(&tar));
        assert_eq!(layer.digest, Digest::of_bytes(&blob));

        // The big file's deflate bytes are in the blob as the wheel holds them.
        let mut zip = zip::ZipArchive::new(File::open(&wheel).unwrap()).unwrap();
        let mut raw = Vec::new();
        let index = zip.index_for_name("demo/big.py").unwrap();
        zip.by_index_raw(index)
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();
        assert!(raw.len() > 1000 && raw.len() < big.len());
        assert!(blob.windows(raw.len()).any(|w| w == raw));
        assert!(blob.len() < tar.len());

        let (again, _) = write_layer(&plan, 0, &mut content(), Vec::new()).unwrap();
        assert_eq!(again, layer);
    }

    #[test]
    fn a_wheel_whose_crc_was_altered_fails_its_layer_naming_the_member() {
        use crate::layer::tar::write_layer;
        let (_dir, big, wheel, plan) = planned_spliceable_wheel();

        let mut crc = flate2::Crc::new();
        crc.update(&big);
        let (good, bad) = (crc.sum().to_le_bytes(), (crc.sum() ^ 1).to_le_bytes());
        let mut bytes = std::fs::read(&wheel).unwrap();
        let mut patched = 0;
        for i in 0..bytes.len() - 4 {
            if bytes[i..i + 4] == good {
                bytes[i..i + 4].copy_from_slice(&bad);
                patched += 1;
            }
        }
        assert_eq!(patched, 2, "the CRC is in the local and the central header");
        std::fs::write(&wheel, &bytes).unwrap();

        let mut content = WheelContent::open(&wheel).unwrap();
        let err = write_layer(&plan, 0, &mut content, Vec::new())
            .unwrap_err()
            .to_string();
        for part in ["demo-1.0-py3-none-any.whl: demo/big.py", "CRC-32"] {
            assert!(err.contains(part), "{err}");
        }
    }

    #[test]
    fn a_script_that_would_replace_the_venvs_interpreter_is_refused_naming_the_wheel() {
        let dir = tempfile::tempdir().unwrap();
        for script in [
            "demo-1.0.data/scripts/python",
            "demo-1.0.data/scripts/Python3.12.exe",
            "demo-1.0.data/scripts/python3.13t",
            "demo-1.0.data/scripts/pypy3",
            "demo-1.0.data/data/bin/python3",
        ] {
            let wheel = write_wheel(
                dir.path(),
                &[
                    (script, b"#!/bin/sh\n", 0o755),
                    DEMO_METADATA,
                    DEMO_WHEEL_FILE,
                ],
            );
            let err = plan_install(&wheel, &target()).unwrap_err().to_string();
            assert!(
                err.starts_with("wheel ") && err.contains("demo-1.0-py3-none-any.whl is invalid"),
                "{err}"
            );
            assert!(
                err.contains(&format!("{script} would replace the venv's interpreter")),
                "{err}"
            );
        }
        // Names that only look alike install as usual.
        for script in ["python-config", "python3.x", "pythons", "ipython"] {
            let name = format!("demo-1.0.data/scripts/{script}");
            let wheel = write_wheel(
                dir.path(),
                &[
                    (&name, b"#!/bin/sh\n", 0o755),
                    DEMO_METADATA,
                    DEMO_WHEEL_FILE,
                ],
            );
            plan_install(&wheel, &target()).unwrap();
        }
    }

    #[test]
    fn a_wheel_listing_a_member_twice_is_refused_naming_the_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let a: Entry = ("demo/a.py", b"safe = True\n", 0o644);
        let b: Entry = ("demo/b.py", b"safe = False\n", 0o644);
        let wheel = write_wheel(dir.path(), &[a, b, DEMO_METADATA, DEMO_WHEEL_FILE]);
        // Renaming b.py to a.py in the local and central headers leaves a
        // valid archive that lists `demo/a.py` twice.
        let bytes = std::fs::read(&wheel).unwrap();
        let renamed = String::from_utf8_lossy(&bytes).matches("demo/b.py").count();
        assert_eq!(renamed, 2, "one local and one central header");
        let mut patched = bytes.clone();
        for at in 0..bytes.len() - 9 {
            if &bytes[at..at + 9] == b"demo/b.py" {
                patched[at..at + 9].copy_from_slice(b"demo/a.py");
            }
        }
        std::fs::write(&wheel, patched).unwrap();
        let err = plan_install(&wheel, &target()).unwrap_err().to_string();
        assert!(
            err.contains(
                "demo-1.0-py3-none-any.whl is invalid: its zip directory lists a member name twice"
            ),
            "{err}"
        );
    }
}
