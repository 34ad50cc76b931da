//! The one place that decides tar metadata: uid/gid 0 (but for the state
//! directories the image's user owns), no user or group names, a fixed
//! mtime, normalised modes, entries in path order.

use super::compress::{Compression, LayerEncoder};
use super::plan::{Content, Entry, EntryKind, LayerPlan, ROOT};
use super::splice::{DeflatedSpan, SplicingGzip};
use super::Layer;
use crate::digest::HashingWriter;
use std::fs::File;
use std::io::{self, Read, Write};

/// Streams the `Content::External` entries of a plan (e.g. the files of a wheel).
pub trait ExternalContent {
    fn open(&mut self, index: usize) -> io::Result<Box<dyn Read + '_>>;

    /// The entry's bytes as its source already holds them deflated (a zip
    /// entry stored with deflate), for a gzip layer to splice in unchanged;
    /// `None` where the source holds them any other way.
    fn deflated(&mut self, _index: usize) -> io::Result<Option<DeflatedSpan<'_>>> {
        Ok(None)
    }
}

/// For plans with no external entries.
pub struct NoExternal;

impl ExternalContent for NoExternal {
    fn open(&mut self, index: usize) -> io::Result<Box<dyn Read + '_>> {
        Err(io::Error::other(format!(
            "no external content source for entry {index}"
        )))
    }
}

/// 0755 where any exec bit is set, otherwise 0644; directories 0755, and
/// 0775 for a directory the image's user owns (a state directory).
pub fn normalise_mode(entry: &Entry) -> u32 {
    let mode = entry.mode;
    match &entry.kind {
        EntryKind::Dir if entry.owner != ROOT => 0o775,
        EntryKind::Dir => 0o755,
        EntryKind::Symlink { .. } => 0o777,
        EntryKind::File { .. } if mode & 0o111 != 0 => 0o755,
        EntryKind::File { .. } => 0o644,
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(ROOT.0.into());
    h.set_gid(ROOT.1.into());
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// Writes the plan as an uncompressed tar into `out`.
pub fn write_tar<W: Write>(
    plan: &LayerPlan,
    mtime: u64,
    external: &mut dyn ExternalContent,
    out: W,
) -> io::Result<W> {
    write_entries(plan, mtime, external, out, None)
}

/// Takes a file's data as a deflated span instead of its bytes.
type Splice<W> = fn(&mut W, DeflatedSpan<'_>) -> io::Result<()>;

/// The tar stream of the plan. With `splice`, a file whose source holds it
/// deflated gets its header and padding written as usual and its data handed
/// to `splice`, which must account for exactly `size` tar bytes.
fn write_entries<W: Write>(
    plan: &LayerPlan,
    mtime: u64,
    external: &mut dyn ExternalContent,
    out: W,
    splice: Option<Splice<W>>,
) -> io::Result<W> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, entry) in plan.entries() {
        let mode = normalise_mode(entry);
        match &entry.kind {
            EntryKind::Dir => {
                let mut h = header(tar::EntryType::Directory, mode, 0, mtime);
                h.set_uid(entry.owner.0.into());
                h.set_gid(entry.owner.1.into());
                builder.append_data(&mut h, format!("{}/", path.as_str()), io::empty())?;
            }
            EntryKind::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, mode, 0, mtime);
                builder.append_link(&mut h, path.as_str(), target)?;
            }
            EntryKind::File { size, content } => {
                let mut h = header(tar::EntryType::Regular, mode, *size, mtime);
                if let (Some(splice), Content::External(i), 1..) = (splice, content, *size) {
                    if let Some(span) = external.deflated(*i)? {
                        if span.size != *size {
                            return Err(io::Error::other(format!(
                                "/{} changed size since it was planned",
                                path.as_str()
                            )));
                        }
                        // The header alone: tar copies no data from an empty
                        // reader and pads nothing after it.
                        builder.append_data(&mut h, path.as_str(), io::empty())?;
                        splice(builder.get_mut(), span)?;
                        let pad = (512 - size % 512) % 512;
                        builder.get_mut().write_all(&[0; 512][..pad as usize])?;
                        continue;
                    }
                }
                let reader: Box<dyn Read + '_> =
                    match content {
                        Content::Bytes(b) => Box::new(&b[..]),
                        Content::HostFile(p) => Box::new(File::open(p).map_err(|e| {
                            io::Error::new(e.kind(), format!("{}: {e}", p.display()))
                        })?),
                        Content::External(i) => external.open(*i)?,
                    };
                // A file that changed size since it was planned would corrupt the
                // archive; refuse rather than pad or truncate.
                let mut exact = ExactSize {
                    inner: reader,
                    left: *size,
                    path: path.as_str(),
                };
                builder.append_data(&mut h, path.as_str(), &mut exact)?;
                exact.check_end()?;
            }
        }
    }
    builder.into_inner()
}

struct ExactSize<'a, R> {
    inner: R,
    left: u64,
    path: &'a str,
}

impl<R: Read> ExactSize<'_, R> {
    fn check_end(&mut self) -> io::Result<()> {
        let mut b = [0u8; 1];
        if self.inner.read(&mut b)? != 0 {
            return Err(io::Error::other(format!(
                "/{} grew while the layer was written",
                self.path
            )));
        }
        Ok(())
    }
}

impl<R: Read> Read for ExactSize<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "/{} shrank while the layer was written",
                self.path
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// How a layer blob is written: the compression, and the threads that may
/// compress its blocks (the bytes do not depend on `jobs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub compression: Compression,
    pub jobs: usize,
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding {
            compression: Compression::Gzip,
            jobs: 1,
        }
    }
}

/// Writes the plan as a gzip layer blob into `out`, hashing both the tar
/// (diff_id) and the compressed bytes (digest) as they stream. Files whose
/// source holds them deflated are spliced in as gzip members of their own
/// (see `splice`); everything else is compressed.
pub fn write_layer<W: Write>(
    plan: &LayerPlan,
    mtime: u64,
    external: &mut dyn ExternalContent,
    out: W,
) -> io::Result<(Layer, W)> {
    write_layer_as(plan, mtime, external, Encoding::default(), out)
}

/// [`write_layer`] with a chosen compression and thread count. Splicing is
/// for gzip only: a zstd layer inflates wheel files and compresses them.
pub fn write_layer_as<W: Write>(
    plan: &LayerPlan,
    mtime: u64,
    external: &mut dyn ExternalContent,
    encoding: Encoding,
    out: W,
) -> io::Result<(Layer, W)> {
    let (diff_id, digest, size, out) = match encoding.compression {
        Compression::Gzip => {
            let sink = write_entries(
                plan,
                mtime,
                external,
                SplicingGzip::new(encoding.jobs, out),
                Some(SplicingGzip::splice),
            )?;
            sink.finish()?
        }
        Compression::Zstd => {
            let compressed = HashingWriter::new(out);
            let encoder = LayerEncoder::new(encoding.compression, encoding.jobs, compressed);
            let uncompressed = HashingWriter::new(encoder);
            let uncompressed = write_tar(plan, mtime, external, uncompressed)?;
            let (diff_id, _, encoder) = uncompressed.finish();
            let compressed = encoder.finish()?;
            let (digest, size, out) = compressed.finish();
            (diff_id, digest, size, out)
        }
    };
    Ok((
        Layer {
            digest,
            diff_id,
            size,
            media_type: encoding.compression.media_type().to_string(),
        },
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::ImagePath;

    fn sample() -> LayerPlan {
        let mut plan = LayerPlan::new();
        plan.bytes(
            ImagePath::new("app/run.sh").unwrap(),
            0o700,
            b"#!/bin/sh\n".to_vec(),
        )
        .unwrap();
        plan.bytes(
            ImagePath::new("app/main.py").unwrap(),
            0o600,
            b"print(1)\n".to_vec(),
        )
        .unwrap();
        plan.symlink(ImagePath::new("app/link").unwrap(), "main.py")
            .unwrap();
        plan
    }

    #[test]
    fn metadata_is_normalised() {
        let tar = write_tar(&sample(), 42, &mut NoExternal, Vec::new()).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, 42)
            );
            assert_eq!(h.username().unwrap(), Some(""));
            seen.push((
                e.path().unwrap().to_string_lossy().into_owned(),
                h.mode().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            [
                ("app/".into(), 0o755),
                ("app/link".into(), 0o777),
                ("app/main.py".into(), 0o644),
                ("app/run.sh".into(), 0o755)
            ]
        );
    }

    #[test]
    fn a_state_directory_is_owned_by_the_user_and_group_writable() {
        let mut plan = sample();
        // Replaces the directory the files implied; its parents stay root's.
        plan.owned_dir(ImagePath::new("app").unwrap(), (65532, 1000))
            .unwrap();
        plan.owned_dir(ImagePath::new("var/lib/api").unwrap(), (65532, 1000))
            .unwrap();
        let tar = write_tar(&plan, 0, &mut NoExternal, Vec::new()).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let got: Vec<(String, u64, u64, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("app/".into(), 65532, 1000, 0o775),
                ("app/link".into(), 0, 0, 0o777),
                ("app/main.py".into(), 0, 0, 0o644),
                ("app/run.sh".into(), 0, 0, 0o755),
                ("var/".into(), 0, 0, 0o755),
                ("var/lib/".into(), 0, 0, 0o755),
                ("var/lib/api/".into(), 65532, 1000, 0o775),
            ]
        );
        // A file where a state directory is asked for is refused, not replaced.
        let mut plan = sample();
        assert!(plan
            .owned_dir(ImagePath::new("app/main.py").unwrap(), (1, 1))
            .is_err());
    }

    #[test]
    fn same_plan_same_digest() {
        let (a, _) = write_layer(&sample(), 0, &mut NoExternal, Vec::new()).unwrap();
        let (b, bytes) = write_layer(&sample(), 0, &mut NoExternal, Vec::new()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.size, bytes.len() as u64);
        let (c, _) = write_layer(&sample(), 1, &mut NoExternal, Vec::new()).unwrap();
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn a_big_layer_is_the_same_blob_whatever_jobs_and_zstd_keeps_the_diff_id() {
        let mut plan = sample();
        // 3.5 MiB of text and numbers: several blocks.
        let big: Vec<u8> = (0..600_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        plan.bytes(ImagePath::new("app/big.txt").unwrap(), 0o644, big)
            .unwrap();
        let write = |compression, jobs| {
            let encoding = Encoding { compression, jobs };
            write_layer_as(&plan, 0, &mut NoExternal, encoding, Vec::new()).unwrap()
        };
        let (one, bytes) = write(Compression::Gzip, 1);
        assert_eq!((one.clone(), bytes.clone()), write(Compression::Gzip, 4));
        assert_eq!(one.media_type, crate::layer::MEDIA_TYPE_OCI_LAYER_GZIP);
        let tar = crate::layer::compress::decompress_all(&one.media_type, &bytes).unwrap();
        assert_eq!(crate::digest::Digest::of_bytes(&tar), one.diff_id);

        let (zstd, zbytes) = write(Compression::Zstd, 3);
        assert_eq!((zstd.clone(), zbytes.clone()), write(Compression::Zstd, 1));
        assert_eq!(zstd.media_type, crate::layer::MEDIA_TYPE_OCI_LAYER_ZSTD);
        assert_eq!(zstd.diff_id, one.diff_id, "the same tar under both");
        assert_ne!(zstd.digest, one.digest);
        assert_eq!(zbytes.len() as u64, zstd.size);
    }

    #[test]
    fn long_paths_survive() {
        let long = format!("app/{}/f.py", "d".repeat(150));
        let mut plan = LayerPlan::new();
        plan.bytes(ImagePath::new(&long).unwrap(), 0o644, b"x".to_vec())
            .unwrap();
        let tar = write_tar(&plan, 0, &mut NoExternal, Vec::new()).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(paths.contains(&long));
    }
}
