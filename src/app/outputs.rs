//! Images left in the source tree by an earlier build: an OCI layout
//! directory, or an archive imgbuild wrote. Neither is the app's, and either
//! can be many times its size (issue 23: an `out/` layout took the app layer
//! from 88 KiB to 56 MiB, then a `svc.tar` added 176 MB), so the app layer
//! never takes them; the build warns once, naming each.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// What a path left out of the app layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// A directory with an `oci-layout` file (any tool's).
    Layout,
    /// A tar imgbuild wrote (`oci-archive:` or `docker-archive:`).
    Archive,
}

impl OutputKind {
    pub fn describe(self) -> &'static str {
        match self {
            OutputKind::Layout => "an OCI image layout",
            OutputKind::Archive => "an image archive imgbuild wrote",
        }
    }
}

/// A path of the source tree left out of the app layer because it holds an
/// image, relative to the source (`/`-separated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptOut {
    pub path: String,
    pub kind: OutputKind,
    /// Bytes it would have added (a layout's files summed).
    pub size: u64,
}

/// Whether `dir` is an OCI image layout: the spec's marker file is in it.
/// Any tool's layout counts, since none belongs in an image's app layer.
pub fn is_layout(dir: &Path) -> bool {
    dir.join("oci-layout")
        .symlink_metadata()
        .is_ok_and(|m| m.is_file())
}

/// Smallest archive imgbuild writes: three tar headers, a config and a
/// manifest, and the end-of-archive blocks; smaller files are not read.
const MIN_ARCHIVE: u64 = 4 * 512;

/// Whether `file` (of `size` bytes) starts the way both of imgbuild's
/// archive writers start it: they write the plan in path order, so the
/// first GNU headers are the directories `blobs/` and `blobs/sha256/`, then
/// a blob named by its 64-digit hex digest. Another tar starting so is an
/// image archive too, so leaving it out is right either way.
pub fn is_image_archive(file: &mut File, size: u64) -> bool {
    if size < MIN_ARCHIVE {
        return false;
    }
    let mut head = [0u8; 3 * 512];
    if file.read_exact(&mut head).is_err() {
        return false;
    }
    let header = |i: usize| &head[i * 512..(i + 1) * 512];
    let name = |h: &[u8]| {
        let n = &h[..100];
        let end = n.iter().position(|b| *b == 0).unwrap_or(100);
        n[..end].to_vec()
    };
    let gnu = |h: &[u8]| &h[257..265] == b"ustar  \0";
    let (first, second, third) = (header(0), header(1), header(2));
    let blob = name(third);
    gnu(first)
        && gnu(second)
        && first[156] == b'5'
        && second[156] == b'5'
        && name(first) == b"blobs/"
        && name(second) == b"blobs/sha256/"
        && blob.len() == "blobs/sha256/".len() + 64
        && blob.starts_with(b"blobs/sha256/")
        && blob[13..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// The one warning for what was kept out, or `None` when nothing was.
pub fn warning(kept: &[KeptOut]) -> Option<String> {
    let (first, rest) = kept.split_first()?;
    let one = |k: &KeptOut| {
        let slash = if k.kind == OutputKind::Layout {
            "/"
        } else {
            ""
        };
        format!(
            "{}{slash} ({}, {})",
            k.path,
            k.kind.describe(),
            crate::text::human(k.size)
        )
    };
    let mut names = one(first);
    for k in rest {
        names.push_str(", ");
        names.push_str(&one(k));
    }
    Some(format!(
        "left out of the app layer: {names}; an image built earlier is not part of the app (write outputs outside the source tree, or list them in .dockerignore to silence this)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{ImagePath, LayerPlan};

    fn archive_like(names: &[&str]) -> Vec<u8> {
        let mut plan = LayerPlan::new();
        for n in names {
            plan.bytes(ImagePath::new(n).unwrap(), 0o644, b"{}".to_vec())
                .unwrap();
        }
        crate::layer::tar::write_tar(&plan, 0, &mut crate::layer::tar::NoExternal, Vec::new())
            .unwrap()
    }

    fn sniff(bytes: &[u8]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tar");
        std::fs::write(&p, bytes).unwrap();
        is_image_archive(&mut File::open(&p).unwrap(), bytes.len() as u64)
    }

    #[test]
    fn an_archive_from_the_tar_writer_is_recognised_and_other_tars_are_not() {
        let blob = format!("blobs/sha256/{}", "ab".repeat(32));
        assert!(sniff(&archive_like(&[&blob, "manifest.json"])));
        assert!(sniff(&archive_like(&[&blob, "index.json", "oci-layout"])));
        // The same writer, but not an image: a source tarball, a blob with a short name.
        assert!(!sniff(&archive_like(&["src/main.py", "README.md"])));
        assert!(!sniff(&archive_like(&[
            "blobs/sha256/abc",
            "manifest.json"
        ])));
        assert!(!sniff(&archive_like(&[
            &format!("blobs/sha256/{}", "AB".repeat(32)),
            "manifest.json"
        ])));
        assert!(!sniff(b"not a tar at all"));
        assert!(!sniff(&[0u8; 4096]));
    }

    #[test]
    fn the_warning_names_each_path_once() {
        assert_eq!(warning(&[]), None);
        let w = warning(&[
            KeptOut {
                path: "out".into(),
                kind: OutputKind::Layout,
                size: 56 << 20,
            },
            KeptOut {
                path: "svc.tar".into(),
                kind: OutputKind::Archive,
                size: 2048,
            },
        ])
        .unwrap();
        assert!(
            w.starts_with("left out of the app layer: out/ (an OCI image layout, 56.0 MiB), svc.tar (an image archive imgbuild wrote, 2.0 KiB); "),
            "{w}"
        );
    }
}
