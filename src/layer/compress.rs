//! Deterministic gzip: one backend (zlib-rs through flate2), one level, and a
//! header with no name, no mtime and OS 255, so the bytes depend only on the
//! input. Changing any of these changes every layer digest: see
//! docs/reproducibility.md before touching it.

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use std::io::Write;

pub const GZIP_LEVEL: u32 = 6;

pub fn gzip_writer<W: Write>(inner: W) -> GzEncoder<W> {
    GzBuilder::new().mtime(0).operating_system(255).write(inner, Compression::new(GZIP_LEVEL))
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
