//! A base layer's tar, inflated once per process.
//!
//! On a cold build three readers walk every base layer: Python detection, the
//! bytecode unpack (which may walk a layer twice) and the native-library
//! check. Inflating a 40 MiB gzip layer into 130 MiB of tar took about 0.3 s
//! of CPU each time, most of a fresh CI runner's one-line-change build. The
//! first full read of a compressed layer now keeps its tar in an unlinked
//! temporary file, and later readers read that file. It is kept only once the
//! stream was read to its end and the blob's digest checked, so what later
//! readers see is exactly what a verified read gives. The file is anonymous
//! (in the cache's temporary directory during a build): it goes when the
//! process does, kill -9 included, and is never reused by another build.

use crate::tee::{BestEffort, Tee};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The verified tars of the layers read so far, by layer index, and the
/// directory their files are made in.
#[derive(Default)]
pub struct LayerTars {
    kept: Mutex<HashMap<usize, Arc<File>>>,
    /// The cache's own temporary directory when a build has one: the system's
    /// may be a tmpfs, where a big base's tars would sit in memory.
    dir: Option<PathBuf>,
}

impl LayerTars {
    /// Tars kept in files made in `dir`.
    pub fn in_dir(dir: PathBuf) -> Self {
        LayerTars {
            kept: Mutex::default(),
            dir: Some(dir),
        }
    }

    /// A new copy to tee a layer's tar into.
    pub fn copy(&self) -> TarCopy {
        let file = match &self.dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        };
        TarCopy {
            file: file.map_or_else(|_| BestEffort::none(), BestEffort::new),
        }
    }

    /// A reader of layer `index`'s kept tar, from its start.
    pub fn open(&self, index: usize) -> Option<KeptTar> {
        let file = self.kept.lock().ok()?.get(&index).cloned()?;
        Some(KeptTar { file, pos: 0 })
    }

    /// Keeps `copy` as layer `index`'s tar (a finished, verified read).
    pub fn keep(&self, index: usize, mut copy: TarCopy) {
        if let (Some(mut file), Ok(mut map)) = (copy.file.take(), self.kept.lock()) {
            if file.flush().is_ok() {
                map.insert(index, Arc::new(file));
            }
        }
    }
}

/// Reads a kept tar with its own position, so readers never share an offset.
pub struct KeptTar {
    file: Arc<File>,
    pos: u64,
}

impl Read for KeptTar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A copy of a tar stream being read, into an unlinked temporary file. A copy
/// that cannot be written is dropped, and the read goes on without it.
pub struct TarCopy {
    file: BestEffort<File>,
}

impl TarCopy {
    /// `inner`, with every byte read from it also written to this copy.
    pub fn tee<'a, R: Read + ?Sized>(
        &'a mut self,
        inner: &'a mut R,
    ) -> Tee<&'a mut R, &'a mut BestEffort<File>> {
        Tee::new(inner, &mut self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_tar_reads_back_what_was_read_through_the_tee_for_each_reader() {
        let dir = tempfile::tempdir().unwrap();
        let tars = LayerTars::in_dir(dir.path().to_path_buf());
        assert!(tars.open(0).is_none(), "nothing is kept before a read");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut copy = tars.copy();
        let mut seen = Vec::new();
        copy.tee(&mut &data[..]).read_to_end(&mut seen).unwrap();
        assert_eq!(seen, data);
        tars.keep(3, copy);
        for _ in 0..2 {
            let mut again = Vec::new();
            tars.open(3).unwrap().read_to_end(&mut again).unwrap();
            assert_eq!(again, data, "each reader starts at the beginning");
        }
        assert!(tars.open(0).is_none(), "only the layer that was read");
    }
}
