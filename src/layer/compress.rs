//! Deterministic gzip: one backend (zlib-rs through flate2), one level, and a
//! header with no name, no mtime and OS 255, so the bytes depend only on the
//! input. Changing any of these changes every layer digest: see
//! docs/reproducibility.md before touching it.

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use std::io::Write;

/// Level 1: a package's layer is compressed once and then shared by every app
/// and build, but a cold build pays for every layer. Level 1 made the cold
/// build about a fifth faster than level 6 (`scripts/bench.sh deps`, see
/// docs/benchmarks.md) for somewhat larger layers.
pub const GZIP_LEVEL: u32 = 1;

pub fn gzip_writer<W: Write>(inner: W) -> GzEncoder<W> {
    GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(inner, Compression::new(GZIP_LEVEL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_carries_nothing_variable() {
        let mut w = gzip_writer(Vec::new());
        w.write_all(b"hello").unwrap();
        let out = w.finish().unwrap();
        // magic, CM=8, FLG=0, MTIME=0, XFL, OS=255
        assert_eq!(&out[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_eq!(out[9], 255);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("layer media type {0} is not supported (only gzip and uncompressed tar layers are)")]
pub struct UnsupportedCompression(pub String);

/// The uncompressed tar stream of a layer blob, by its media type.
pub fn decompressed<'a>(
    media_type: &str,
    r: impl std::io::Read + 'a,
) -> Result<Box<dyn std::io::Read + 'a>, UnsupportedCompression> {
    if media_type.ends_with("gzip") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if media_type.ends_with(".tar")
        || media_type == "application/vnd.docker.image.rootfs.diff.tar"
    {
        Ok(Box::new(r))
    } else {
        Err(UnsupportedCompression(media_type.to_string()))
    }
}
