//! The source tree digest (defined in docs/reproducibility.md): what the app
//! layer holds, independent of where it lands in the image and of mtimes.

use super::AttestError;
use crate::digest::Digest;
use crate::layer::{Content, EntryKind, ImagePath, LayerPlan};
use sha2::{Digest as _, Sha256};

/// sha256 over one line per entry of the app layer below `workdir`, in path
/// order: `dir <path>`, `file <0644|0755> <sha256 of content> <path>` or
/// `symlink <target> <path>`, each ending in `\n`; paths relative to `workdir`.
pub fn source_tree_digest(plan: &LayerPlan, workdir: &ImagePath) -> Result<Digest, AttestError> {
    let mut h = Sha256::new();
    for (path, entry) in plan.entries() {
        if !path.starts_with(workdir) || path == workdir {
            continue;
        }
        let rel = &path.as_str()[workdir.as_str().len()..].trim_start_matches('/');
        let line = match &entry.kind {
            EntryKind::Dir => format!("dir {rel}\n"),
            EntryKind::Symlink { target } => format!("symlink {target} {rel}\n"),
            EntryKind::File { content, .. } => {
                let mode = if entry.mode & 0o111 != 0 {
                    "0755"
                } else {
                    "0644"
                };
                let digest = match content {
                    Content::Bytes(b) => Digest::of_bytes(b),
                    Content::HostFile(p) => {
                        let read = |source| AttestError::Read {
                            path: p.clone(),
                            source,
                        };
                        Digest::of_reader(std::fs::File::open(p).map_err(read)?)
                            .map_err(read)?
                            .0
                    }
                    // The app layer streams host files only; anything else has no stable bytes here.
                    Content::External(i) => Digest::of_bytes(format!("external {i}").as_bytes()),
                };
                format!("file {mode} {} {rel}\n", digest.hex())
            }
        };
        h.update(line.as_bytes());
    }
    Ok(Digest::from_hex(&hex::encode(h.finalize())).expect("sha256 is 64 hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(workdir: &str, files: &[(&str, u32, &[u8])]) -> LayerPlan {
        let mut p = LayerPlan::new();
        let w = ImagePath::new(workdir).unwrap();
        p.dir(w.clone(), 0o755).unwrap();
        for (name, mode, bytes) in files {
            p.bytes(w.join(name).unwrap(), *mode, bytes.to_vec())
                .unwrap();
        }
        p
    }

    #[test]
    fn is_the_sha256_of_the_documented_lines() {
        let p = plan("app", &[("src/main.py", 0o644, b"print(1)\n")]);
        let want = Digest::of_bytes(
            format!(
                "dir src\nfile 0644 {} src/main.py\n",
                Digest::of_bytes(b"print(1)\n").hex()
            )
            .as_bytes(),
        );
        let got = source_tree_digest(&p, &ImagePath::new("app").unwrap()).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn ignores_the_workdir_but_not_content_or_exec_bits() {
        let digest = |workdir: &str, mode: u32, content: &[u8]| {
            source_tree_digest(
                &plan(workdir, &[("m.py", mode, content)]),
                &ImagePath::new(workdir).unwrap(),
            )
            .unwrap()
        };
        let a = digest("app", 0o644, b"x");
        let moved = digest("srv/app", 0o600, b"x");
        assert_eq!(a, moved);
        let exec = digest("app", 0o755, b"x");
        let edited = digest("app", 0o644, b"y");
        assert_ne!(a, exec);
        assert_ne!(a, edited);
    }
}
