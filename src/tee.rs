//! Reading through a copy: every byte read from a reader is also written to
//! a writer, so one pass both consumes a stream and keeps it (a pulled blob
//! into the store, a base layer's tar for later readers, a deflated span into
//! a layer being spliced).

use std::io::{self, Read, Write};

/// `inner`, with every byte read from it also written to `copy`. A failed
/// write fails the read; a copy that must never fail the read goes in a
/// [`BestEffort`].
pub struct Tee<R, W> {
    inner: R,
    copy: W,
    copied: u64,
}

impl<R, W> Tee<R, W> {
    pub fn new(inner: R, copy: W) -> Self {
        Tee {
            inner,
            copy,
            copied: 0,
        }
    }

    /// The bytes read (and copied) so far.
    pub fn copied(&self) -> u64 {
        self.copied
    }

    pub fn copy_mut(&mut self) -> &mut W {
        &mut self.copy
    }
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        self.copied += n as u64;
        Ok(n)
    }
}

/// A copy that may fail without failing what it copies: the first failed
/// write drops the writer, and later writes go nowhere.
pub struct BestEffort<W>(Option<W>);

impl<W> BestEffort<W> {
    pub fn new(writer: W) -> Self {
        BestEffort(Some(writer))
    }

    /// No copy at all (the writer could not be made).
    pub fn none() -> Self {
        BestEffort(None)
    }

    /// The writer, unless a write to it failed; later writes go nowhere.
    pub fn take(&mut self) -> Option<W> {
        self.0.take()
    }
}

impl<W: Write> Write for BestEffort<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(w) = &mut self.0 {
            if w.write_all(buf).is_err() {
                self.0 = None;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(w) = &mut self.0 {
            if w.flush().is_err() {
                self.0 = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes `room` bytes, then fails.
    struct Full {
        kept: Vec<u8>,
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.kept.len() + buf.len() > self.room {
                return Err(io::Error::other("disk full"));
            }
            self.kept.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn what_is_read_through_a_tee_is_copied_and_counted() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut tee = Tee::new(&data[..], Vec::new());
        let mut seen = Vec::new();
        tee.read_to_end(&mut seen).unwrap();
        assert_eq!(seen, data);
        assert_eq!(tee.copied(), data.len() as u64);
        assert_eq!(*tee.copy_mut(), data);
    }

    #[test]
    fn a_failed_copy_fails_the_read_unless_it_is_best_effort() {
        let full = || Full {
            kept: Vec::new(),
            room: 10,
        };
        let mut strict = Tee::new(&[7u8; 100][..], full());
        assert!(strict.read_to_end(&mut Vec::new()).is_err());

        let mut lenient = Tee::new(&[7u8; 100][..], BestEffort::new(full()));
        let mut seen = Vec::new();
        lenient.read_to_end(&mut seen).unwrap();
        assert_eq!(seen.len(), 100, "the read goes on");
        assert!(
            lenient.copy_mut().take().is_none(),
            "the broken copy is dropped"
        );
    }
}
