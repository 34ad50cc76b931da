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

/// A reader that hashes what it yields and, at EOF, refuses to end unless the
/// bytes match the expected digest and size. Use it wherever fetched bytes are
/// consumed, so nothing unverified is ever acted on silently.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    expected: Digest,
    expected_size: Option<u64>,
    what: String,
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
        }
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
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: expected {size} bytes, got {}", self.what, self.count),
                    ));
                }
            }
            if got != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: content does not match its digest (expected {}, got {got})",
                        self.what, self.expected
                    ),
                ));
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Some(size) = self.expected_size {
            if self.count > size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: more than the expected {size} bytes", self.what),
                ));
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
    }
}
