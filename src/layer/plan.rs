//! What a layer will hold, before any byte is written: pure data, sorted by
//! path, with the parent directories every entry implies.

use super::path::ImagePath;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Small generated files (RECORD, launchers, pyvenv.cfg).
    Bytes(Vec<u8>),
    /// A file on the host, streamed when the layer is written.
    HostFile(PathBuf),
    /// Streamed from a source the writer is handed (e.g. the n-th zip entry of a wheel).
    External(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { size: u64, content: Content },
    Symlink { target: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits only; normalised by the tar writer.
    pub mode: u32,
    /// `(uid, gid)`: root for everything but the directories the image's
    /// user writes in ([`LayerPlan::owned_dir`]).
    pub owner: (u32, u32),
}

/// The owner of every entry but the state directories.
pub const ROOT: (u32, u32) = (0, 0);

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0} appears twice in the layer")]
    Duplicate(ImagePath),
    #[error("{0} is both a file and a directory in the layer")]
    NotADirectory(ImagePath),
}

/// Entries by path. Adding an entry adds its missing parent directories as
/// 0755, so every layer is self-contained and extracts the same everywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerPlan {
    entries: BTreeMap<ImagePath, Entry>,
}

impl LayerPlan {
    pub fn new() -> Self {
        Self::default()
    }

    fn add_parents(&mut self, path: &ImagePath) -> Result<(), PlanError> {
        for dir in path.ancestors() {
            match self.entries.get(&dir) {
                None => {
                    self.entries.insert(
                        dir,
                        Entry {
                            kind: EntryKind::Dir,
                            mode: 0o755,
                            owner: ROOT,
                        },
                    );
                }
                Some(Entry {
                    kind: EntryKind::Dir,
                    ..
                }) => {}
                Some(_) => return Err(PlanError::NotADirectory(dir)),
            }
        }
        Ok(())
    }

    fn insert(&mut self, path: ImagePath, entry: Entry) -> Result<(), PlanError> {
        self.add_parents(&path)?;
        match self.entries.get(&path) {
            // An implied directory may later be given explicitly (to set its mode).
            Some(Entry {
                kind: EntryKind::Dir,
                ..
            }) if entry.kind == EntryKind::Dir => {}
            Some(_) => return Err(PlanError::Duplicate(path)),
            None => {}
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    pub fn dir(&mut self, path: ImagePath, mode: u32) -> Result<(), PlanError> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::Dir,
                mode,
                owner: ROOT,
            },
        )
    }

    /// A directory `owner` writes in (a state directory): it replaces a
    /// directory already planned at `path`, and the tar writer gives it
    /// that owner and mode 0775 (group-writable, for runtimes that run the
    /// image with an arbitrary uid in its gid, as OpenShift does).
    pub fn owned_dir(&mut self, path: ImagePath, owner: (u32, u32)) -> Result<(), PlanError> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::Dir,
                mode: 0o775,
                owner,
            },
        )
    }

    pub fn file(
        &mut self,
        path: ImagePath,
        mode: u32,
        size: u64,
        content: Content,
    ) -> Result<(), PlanError> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::File { size, content },
                mode,
                owner: ROOT,
            },
        )
    }

    pub fn bytes(&mut self, path: ImagePath, mode: u32, bytes: Vec<u8>) -> Result<(), PlanError> {
        let size = bytes.len() as u64;
        self.file(path, mode, size, Content::Bytes(bytes))
    }

    pub fn symlink(&mut self, path: ImagePath, target: &str) -> Result<(), PlanError> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::Symlink {
                    target: target.to_string(),
                },
                mode: 0o777,
                owner: ROOT,
            },
        )
    }

    /// Takes every entry of `other`; used when the layer budget merges packages.
    pub fn merge(&mut self, other: LayerPlan) -> Result<(), PlanError> {
        for (path, entry) in other.entries {
            self.insert(path, entry)?;
        }
        Ok(())
    }

    pub fn entries(&self) -> impl Iterator<Item = (&ImagePath, &Entry)> {
        self.entries.iter()
    }

    pub fn get(&self, path: &ImagePath) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of file sizes, uncompressed; what the layer budget ranks by.
    pub fn content_size(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                EntryKind::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImagePath {
        ImagePath::new(s).unwrap()
    }

    #[test]
    fn implies_parents_and_keeps_paths_sorted() {
        let mut plan = LayerPlan::new();
        plan.bytes(p("app/b.py"), 0o644, b"b".to_vec()).unwrap();
        plan.bytes(p("app/a/x.py"), 0o644, b"x".to_vec()).unwrap();
        let paths: Vec<_> = plan
            .entries()
            .map(|(p, _)| p.as_str().to_string())
            .collect();
        assert_eq!(paths, ["app", "app/a", "app/a/x.py", "app/b.py"]);
    }

    #[test]
    fn refuses_duplicates_and_files_used_as_dirs() {
        let mut plan = LayerPlan::new();
        plan.bytes(p("a"), 0o644, vec![]).unwrap();
        assert!(matches!(
            plan.bytes(p("a"), 0o644, vec![]),
            Err(PlanError::Duplicate(_))
        ));
        assert!(matches!(
            plan.bytes(p("a/b"), 0o644, vec![]),
            Err(PlanError::NotADirectory(_))
        ));
    }
}
