//! Layers spliced from wheels. A zip entry stored with deflate is already a
//! deflate stream, and the zip's CRC-32 and size are exactly a gzip trailer, so
//! such a file goes into the layer as a gzip member of its own: a fixed header,
//! the entry's compressed bytes copied verbatim, and that trailer. Everything
//! else (tar headers, padding, generated files) goes through the usual
//! compressor (`compress`) in members between them. A concatenation of gzip
//! members is one gzip stream (RFC 1952), so every unpacker reads one tar.
//!
//! The spliced bytes are inflated as they are copied: the diff_id is hashed
//! over the inflated tar, and the CRC-32, the size and any sha256 the source
//! vouches for (a wheel's RECORD) are checked before the layer is accepted.
//! The output depends only on the plan and the source's bytes.

use super::compress::{Compression, LayerEncoder};
use crate::digest::{Digest, HashingWriter, Mismatch};
use crate::tee::Tee;
use flate2::Crc;
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// A spliced member's header: no name, no mtime, no extra flags, OS 255.
pub const MEMBER_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// A file's content as raw deflate bytes, with what its source declares about
/// the inflated bytes.
pub struct DeflatedSpan<'a> {
    /// The deflate stream, exactly `compressed_size` bytes, with no framing.
    pub raw: Box<dyn Read + 'a>,
    pub compressed_size: u64,
    /// CRC-32 and length of the inflated bytes, as the source declares them.
    pub crc32: u32,
    pub size: u64,
    /// The sha256 the inflated bytes must have, when the source lists one.
    pub sha256: Option<Digest>,
    /// Names the file in errors, e.g. `wheel.whl: pkg/mod.py`.
    pub what: String,
}

/// Why a span was refused; returned inside an `io::Error` of kind `InvalidData`.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("{what}: the inflated bytes do not match the zip's CRC-32; the wheel is corrupt, download it again")]
    Crc { what: String },
    #[error("{what}: inflates to {got} bytes, the zip says {expected}; the wheel is corrupt, download it again")]
    Size {
        what: String,
        expected: u64,
        got: u64,
    },
    #[error("{what}: the deflate stream ends before its {compressed} compressed bytes do; the wheel is corrupt, download it again")]
    Trailing { what: String, compressed: u64 },
    #[error("{what}: the compressed bytes are not a valid deflate stream; the wheel is corrupt, download it again")]
    Deflate {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The layer's gzip stream: the tar bytes written to it compressed in blocks
/// (`compress::LayerEncoder`, cut at each splice and every 1 MiB), and spliced
/// members between them. Hashes the tar (diff_id) and the blob (digest) as
/// they stream.
pub struct SplicingGzip<W: Write> {
    tar: HashingWriter<io::Sink>,
    blocks: LayerEncoder<HashingWriter<W>>,
    buf: Vec<u8>,
}

impl<W: Write> SplicingGzip<W> {
    /// `jobs`: the threads that may compress blocks; the bytes do not depend on it.
    pub fn new(jobs: usize, out: W) -> Self {
        SplicingGzip {
            tar: HashingWriter::new(io::sink()),
            blocks: LayerEncoder::new(Compression::Gzip, jobs, HashingWriter::new(out)),
            buf: vec![0; 32 << 10],
        }
    }

    /// Writes `span` as a member of its own and its inflated bytes to the tar
    /// hash, checking them against what the span declares.
    pub fn splice(&mut self, span: DeflatedSpan<'_>) -> io::Result<()> {
        let DeflatedSpan {
            raw,
            compressed_size,
            crc32,
            size,
            sha256,
            what,
        } = span;
        let blob = self.blocks.end_block()?;
        blob.write_all(&MEMBER_HEADER)?;
        let copied = Tee::new(raw.take(compressed_size), blob);
        let mut inflate = flate2::read::DeflateDecoder::new(copied);
        let mut crc = Crc::new();
        let mut sha = sha256.as_ref().map(|_| Sha256::new());
        let buf = &mut self.buf;
        let mut got = 0u64;
        loop {
            let n = match inflate.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source)
                    if source.kind() == io::ErrorKind::InvalidInput
                        || source.kind() == io::ErrorKind::InvalidData
                        || source.kind() == io::ErrorKind::UnexpectedEof =>
                {
                    return Err(invalid(SpliceError::Deflate { what, source }))
                }
                Err(e) => return Err(e),
            };
            got += n as u64;
            if got > size {
                return Err(invalid(SpliceError::Size {
                    what,
                    expected: size,
                    got,
                }));
            }
            crc.update(&buf[..n]);
            if let Some(sha) = &mut sha {
                sha.update(&buf[..n]);
            }
            self.tar.write_all(&buf[..n])?;
        }
        // Every compressed byte must belong to the deflate stream, or the
        // member would carry bytes between its body and its trailer.
        let consumed = inflate.total_in();
        let mut copied = inflate.into_inner();
        io::copy(&mut copied, &mut io::sink())?;
        if consumed != compressed_size || copied.copied() != compressed_size {
            return Err(invalid(SpliceError::Trailing {
                what,
                compressed: compressed_size,
            }));
        }
        if got != size {
            return Err(invalid(SpliceError::Size {
                what,
                expected: size,
                got,
            }));
        }
        if crc.sum() != crc32 {
            return Err(invalid(SpliceError::Crc { what }));
        }
        if let (Some(expected), Some(sha)) = (sha256, sha) {
            let got = Digest::from_hex(&hex::encode(sha.finalize())).expect("a sha256 is hex");
            if got != expected {
                return Err(invalid(Mismatch::Digest {
                    what: format!("{what} (sha256 from the wheel's RECORD)"),
                    expected,
                    got,
                    hint: "; the wheel is corrupt or was built wrongly; lock a good release of it"
                        .into(),
                }));
            }
        }
        let blob = self.blocks.end_block()?;
        blob.write_all(&crc32.to_le_bytes())?;
        // ISIZE is the length modulo 2^32 (RFC 1952).
        blob.write_all(&(size as u32).to_le_bytes())?;
        Ok(())
    }

    /// Ends the last member: (diff_id, digest, blob size, the writer).
    pub fn finish(self) -> io::Result<(Digest, Digest, u64, W)> {
        let (diff_id, _, _) = self.tar.finish();
        let (digest, size, out) = self.blocks.finish()?.finish();
        Ok((diff_id, digest, size, out))
    }
}

impl<W: Write> Write for SplicingGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.blocks.write_all(buf)?;
        self.tar.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn crc(data: &[u8]) -> u32 {
        let mut c = flate2::Crc::new();
        c.update(data);
        c.sum()
    }

    fn span<'a>(raw: &'a [u8], data: &[u8]) -> DeflatedSpan<'a> {
        DeflatedSpan {
            raw: Box::new(raw),
            compressed_size: raw.len() as u64,
            crc32: crc(data),
            size: data.len() as u64,
            sha256: Some(Digest::of_bytes(data)),
            what: "demo.whl: demo/big.py".into(),
        }
    }

    /// Writes `head`, the span, then `tail`; returns the blob and its hashes.
    fn splice_between(
        head: &[u8],
        span: DeflatedSpan,
        tail: &[u8],
    ) -> io::Result<(Vec<u8>, Digest, Digest)> {
        let mut gz = SplicingGzip::new(1, Vec::new());
        gz.write_all(head)?;
        gz.splice(span)?;
        gz.write_all(tail)?;
        let (diff_id, digest, size, blob) = gz.finish()?;
        assert_eq!(size, blob.len() as u64);
        Ok((blob, diff_id, digest))
    }

    fn error_text(e: io::Error) -> String {
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        e.into_inner().unwrap().to_string()
    }

    #[test]
    fn a_spliced_member_is_the_raw_deflate_between_a_fixed_header_and_the_zip_trailer() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let raw = deflate(&data);
        let (blob, diff_id, digest) = splice_between(b"header", span(&raw, &data), b"pad").unwrap();

        let mut tar = Vec::new();
        MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar, [&b"header"[..], &data, b"pad"].concat());
        assert_eq!(diff_id, Digest::of_bytes(&tar));
        assert_eq!(digest, Digest::of_bytes(&blob));

        let mut member = MEMBER_HEADER.to_vec();
        member.extend(&raw);
        member.extend(crc(&data).to_le_bytes());
        member.extend((data.len() as u32).to_le_bytes());
        let at = blob
            .windows(member.len())
            .position(|w| w == member)
            .expect("the member is in the blob verbatim");
        // Three members: the head compressed, the splice, the tail compressed.
        assert!(at > 0 && at + member.len() < blob.len());
        assert_eq!(&blob[at + member.len()..][..2], [0x1f, 0x8b]);
    }

    #[test]
    fn with_nothing_to_splice_the_blob_is_the_block_encoders_whatever_the_writes_and_jobs() {
        let text: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut plain = LayerEncoder::new(Compression::Gzip, 1, Vec::new());
        plain.write_all(&text).unwrap();
        let plain = plain.finish().unwrap();
        for (jobs, chunk) in [(1, 700), (4, 4096), (2, 1 << 20)] {
            let mut gz = SplicingGzip::new(jobs, Vec::new());
            for c in text.chunks(chunk) {
                gz.write_all(c).unwrap();
            }
            let (diff_id, _, _, blob) = gz.finish().unwrap();
            assert!(blob == plain, "jobs {jobs}, writes of {chunk}");
            assert_eq!(diff_id, Digest::of_bytes(&text));
        }
    }

    #[test]
    fn nothing_but_spliced_bytes_makes_one_member_and_no_empty_ones() {
        let data = b"hello hello hello hello".repeat(50);
        let raw = deflate(&data);
        let (blob, _, _) = splice_between(b"", span(&raw, &data), b"").unwrap();
        assert_eq!(blob.len(), MEMBER_HEADER.len() + raw.len() + 8);
    }

    #[test]
    fn a_crc_that_does_not_match_the_inflated_bytes_names_the_wheel_member() {
        let data = b"print('hello')\n".repeat(100);
        let raw = deflate(&data);
        let mut bad = span(&raw, &data);
        bad.crc32 ^= 1;
        let err = error_text(splice_between(b"h", bad, b"").unwrap_err());
        assert!(
            err.contains("demo.whl: demo/big.py") && err.contains("CRC-32"),
            "{err}"
        );
    }

    #[test]
    fn a_size_a_digest_or_a_stream_that_disagrees_is_refused() {
        let data = b"print('hello')\n".repeat(100);
        let raw = deflate(&data);

        let mut long = span(&raw, &data);
        long.size -= 1;
        let err = error_text(splice_between(b"", long, b"").unwrap_err());
        assert!(
            err.contains("inflates to") && err.contains("demo/big.py"),
            "{err}"
        );

        let mut short = span(&raw, &data);
        short.size += 1;
        assert!(error_text(splice_between(b"", short, b"").unwrap_err()).contains("inflates to"));

        let mut other = span(&raw, &data);
        other.sha256 = Some(Digest::of_bytes(b"something else"));
        let err = error_text(splice_between(b"", other, b"").unwrap_err());
        assert!(
            err.contains("RECORD") && err.contains("demo/big.py"),
            "{err}"
        );

        let trailing = [&raw[..], b"junk"].concat();
        let err = error_text(splice_between(b"", span(&trailing, &data), b"").unwrap_err());
        assert!(err.contains("deflate stream ends"), "{err}");

        let garbage = [0xffu8; 64];
        let err = error_text(splice_between(b"", span(&garbage, &data), b"").unwrap_err());
        assert!(err.contains("not a valid deflate stream"), "{err}");
    }
}
