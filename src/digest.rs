//! Content digests. A `Digest` is validated when it is made, so every other
//! module can treat it as trusted text.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    /// Always `sha256`: the only algorithm the registries and runtimes we target agree on.
    hex: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
pub struct InvalidDigest(pub String);

impl Digest {
    pub fn from_hex(hex: &str) -> Result<Self, InvalidDigest> {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(InvalidDigest(hex.to_string()))
        }
    }

    pub fn of_bytes(bytes: &[u8]) -> Self {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// Hashes a whole stream without holding it.
    pub fn of_reader(mut r: impl Read) -> io::Result<(Self, u64)> {
        let mut w = HashingWriter::new(io::sink());
        let n = io::copy(&mut r, &mut w)?;
        let (d, _, _) = w.finish();
        Ok((d, n))
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The short form used in progress output and history: the first 12 hex digits.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;
    fn from_str(s: &str) -> Result<Self, InvalidDigest> {
        match s.strip_prefix("sha256:") {
            Some(hex) => Digest::from_hex(hex).map_err(|_| InvalidDigest(s.to_string())),
            None => Err(InvalidDigest(s.to_string())),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (Digest, u64, W) {
        let hex = hex::encode(self.hasher.finalize());
        (Digest { hex }, self.count, self.inner)
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why a `VerifyingReader` refused to end; carried inside the `io::Error`
/// (kind `InvalidData`) it returns, so callers can tell it from a read failure.
#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    #[error("{what}: expected {expected} bytes, got {got}")]
    Short {
        what: String,
        expected: u64,
        got: u64,
    },
    #[error("{what}: more than the expected {expected} bytes")]
    Long { what: String, expected: u64 },
    #[error("{what}: content does not match its digest (expected {expected}, got {got}){hint}")]
    Digest {
        what: String,
        expected: Digest,
        got: Digest,
        /// `; what to do`, or empty.
        hint: String,
    },
}

/// A reader that hashes what it yields and, at EOF, refuses to end unless the
/// bytes match the expected digest and size. Use it wherever fetched bytes are
/// consumed, so nothing unverified is ever acted on silently. It is the one
/// hashing reader: blobs, cached wheels and the files inside a wheel all use it.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    expected: Digest,
    expected_size: Option<u64>,
    what: String,
    hint: Option<&'static str>,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(
        inner: R,
        expected: Digest,
        expected_size: Option<u64>,
        what: impl Into<String>,
    ) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            expected,
            expected_size,
            what: what.into(),
            hint: None,
        }
    }

    /// What to do when the digest does not match, appended to the error.
    pub fn with_hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }

    fn fail(&self, m: Mismatch) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, m)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let got = Digest {
                hex: hex::encode(self.hasher.clone().finalize()),
            };
            if let Some(size) = self.expected_size {
                if size != self.count {
                    return Err(self.fail(Mismatch::Short {
                        what: self.what.clone(),
                        expected: size,
                        got: self.count,
                    }));
                }
            }
            if got != self.expected {
                return Err(self.fail(Mismatch::Digest {
                    what: self.what.clone(),
                    expected: self.expected.clone(),
                    got,
                    hint: self.hint.map(|h| format!("; {h}")).unwrap_or_default(),
                }));
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Some(size) = self.expected_size {
            if self.count > size {
                return Err(self.fail(Mismatch::Long {
                    what: self.what.clone(),
                    expected: size,
                }));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_sha256_with_64_lowercase_hex() {
        let ok = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(ok.parse::<Digest>().unwrap().to_string(), ok);
        assert!("sha256:E3B0".parse::<Digest>().is_err());
        assert!(
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse::<Digest>()
                .is_err()
        );
        assert_eq!(Digest::of_bytes(b"").to_string(), ok);
    }

    #[test]
    fn verifying_reader_rejects_tampered_bytes() {
        let d = Digest::of_bytes(b"hello");
        let mut out = Vec::new();
        assert!(VerifyingReader::new(&b"hello"[..], d.clone(), Some(5), "x")
            .read_to_end(&mut out)
            .is_ok());
        let err = VerifyingReader::new(&b"hellO"[..], d, Some(5), "blob x")
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(err.to_string().contains("blob x"));
        assert!(matches!(
            err.get_ref().and_then(|e| e.downcast_ref::<Mismatch>()),
            Some(Mismatch::Digest { .. })
        ));
    }

    #[test]
    fn verifying_reader_checks_the_size_both_ways_and_adds_its_hint() {
        let d = Digest::of_bytes(b"hello");
        let mut out = Vec::new();
        let short = VerifyingReader::new(&b"hell"[..], d.clone(), Some(5), "x")
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(short.to_string(), "x: expected 5 bytes, got 4");
        let long = VerifyingReader::new(&b"hello!"[..], d.clone(), Some(5), "x")
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(long.to_string(), "x: more than the expected 5 bytes");
        let hinted = VerifyingReader::new(&b"jello"[..], d, None, "x")
            .with_hint("download it again")
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(
            hinted.to_string().ends_with("; download it again"),
            "{hinted}"
        );
    }
}
