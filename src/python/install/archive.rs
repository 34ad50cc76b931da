//! The wheel as a zip archive: every entry listed and checked before anything
//! is planned (no escapes, symlinks, encryption or duplicates), small metadata
//! files read whole with a size cap, and [`WheelContent`], which streams an
//! entry to the layer writer and checks it against RECORD's sha256.

use super::record::{normalise_record_path, parse_record};
use super::{Ctx, WheelError};
use crate::digest::{Digest, VerifyingReader};
use crate::layer::splice::DeflatedSpan;
use crate::layer::tar::ExternalContent;
use base64::Engine as _;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use zip::{CompressionMethod, ZipArchive};

/// METADATA, WHEEL, RECORD and entry_points.txt are read whole; anything
/// bigger than this is not a real wheel's metadata.
pub(super) const MAX_METADATA_FILE: u64 = 64 << 20;

pub(super) type Archive = ZipArchive<BufReader<File>>;

/// A zip entry as we install it: checked name, size, exec bit.
#[derive(Debug)]
pub(super) struct ZipEntry {
    pub index: usize,
    /// `/`-separated, no `.`, `..` or empty components, no trailing `/`.
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    pub executable: bool,
}

/// Opens `ctx.wheel` and lists its checked entries.
pub(super) fn open(ctx: &Ctx) -> Result<(Archive, Vec<ZipEntry>), WheelError> {
    let file = File::open(ctx.wheel).map_err(|source| ctx.io(source))?;
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(|source| ctx.zip(source))?;
    let entries = list_entries(&mut archive, ctx)?;
    Ok((archive, entries))
}

/// Lists and checks every entry: no escapes, no symlinks, no duplicates.
fn list_entries(archive: &mut Archive, ctx: &Ctx) -> Result<Vec<ZipEntry>, WheelError> {
    // The zip reader keeps one entry per name, so a name listed twice is never
    // seen below: which copy is installed would depend on the unzipper.
    if archive.has_duplicate_names() {
        return Err(ctx.invalid(
            "its zip directory lists a member name twice, so which copy is installed \
             depends on the unzipper; rebuild the wheel"
                .to_string(),
        ));
    }
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
pub(super) fn check_entry_name(raw: &str) -> Result<String, &'static str> {
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

/// A metadata file's bytes, refusing sizes no real metadata file has.
pub(super) fn read_small(
    archive: &mut Archive,
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

/// Streams entry `i` of a wheel for the layer writer, checking it against the
/// sha256 the wheel's RECORD lists for it when the stream ends.
pub struct WheelContent {
    wheel: PathBuf,
    archive: Archive,
    /// Each entry's sha256 from RECORD; `None` where RECORD's hash is malformed.
    expected: HashMap<usize, Option<Digest>>,
}

impl WheelContent {
    pub fn open(wheel: &Path) -> Result<Self, WheelError> {
        let ctx = Ctx { wheel };
        let (mut archive, entries) = open(&ctx)?;
        let record = entries.iter().find(|e| {
            !e.is_dir && e.name.ends_with(".dist-info/RECORD") && e.name.matches('/').count() == 1
        });
        let mut expected = HashMap::new();
        if let Some(record) = record {
            let text = read_small(&mut archive, record, &ctx)?;
            let index: HashMap<&str, usize> =
                entries.iter().map(|e| (e.name.as_str(), e.index)).collect();
            for row in parse_record(&text, &ctx)? {
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

/// RECORD's sha256 for an entry, if it lists one; an error where its hash is malformed.
fn expected_sha256(
    expected: Option<&Option<Digest>>,
    wheel: &Path,
    name: &str,
) -> io::Result<Option<Digest>> {
    match expected {
        None => Ok(None),
        Some(Some(digest)) => Ok(Some(digest.clone())),
        Some(None) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            WheelError::Corrupt {
                wheel: wheel.into(),
                entry: name.to_string(),
            },
        )),
    }
}

impl ExternalContent for WheelContent {
    /// A deflated entry's compressed bytes, to splice into a gzip layer; the
    /// layer writer checks them against the zip's CRC-32 and size and RECORD's sha256.
    fn deflated(&mut self, index: usize) -> io::Result<Option<DeflatedSpan<'_>>> {
        let file = self.archive.by_index_raw(index).map_err(|source| {
            io::Error::other(WheelError::Entry {
                wheel: self.wheel.clone(),
                index,
                source,
            })
        })?;
        if file.compression() != CompressionMethod::Deflated {
            return Ok(None);
        }
        let name = file.name().map(|n| n.into_owned()).unwrap_or_default();
        let sha256 = expected_sha256(self.expected.get(&index), &self.wheel, &name)?;
        let what = format!("{}: {name}", self.wheel.display());
        let (compressed_size, crc32, size) = (file.compressed_size(), file.crc32(), file.size());
        Ok(Some(DeflatedSpan {
            raw: Box::new(file),
            compressed_size,
            crc32,
            size,
            sha256,
            what,
        }))
    }

    fn open(&mut self, index: usize) -> io::Result<Box<dyn Read + '_>> {
        let file = self.archive.by_index(index).map_err(|source| {
            io::Error::other(WheelError::Entry {
                wheel: self.wheel.clone(),
                index,
                source,
            })
        })?;
        let name = file.name().map(|n| n.into_owned()).unwrap_or_default();
        let what = format!(
            "{}: {name} (sha256 from the wheel's RECORD)",
            self.wheel.display()
        );
        match expected_sha256(self.expected.get(&index), &self.wheel, &name)? {
            None => Ok(Box::new(file)),
            Some(digest) => Ok(Box::new(
                VerifyingReader::new(file, digest, None, what).with_hint(
                    "the wheel is corrupt or was built wrongly; lock a good release of it",
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
