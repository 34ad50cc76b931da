//! A layer's tar entries (path, kind, mode, size, content hash), for the
//! file level of a diff.

use super::diff::FileMeta;
use crate::base::BlobSource;
use crate::image::manifest::Descriptor;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read;

/// Lists a layer; `Err` says why it cannot be (for the report, not fatal).
pub fn list_layer(
    src: &dyn BlobSource,
    desc: &Descriptor,
) -> Result<BTreeMap<String, FileMeta>, String> {
    let raw = src.open(&desc.digest).map_err(|e| e.to_string())?;
    let raw = crate::digest::VerifyingReader::new(
        raw,
        desc.digest.clone(),
        Some(desc.size),
        format!("layer {}", desc.digest),
    );
    let reader = crate::layer::compress::decompressed(&desc.media_type, raw)
        .map_err(|e| format!("layers of type {} cannot be listed: {e}", desc.media_type))?;
    list_tar(reader).map_err(|e| format!("reading layer {}: {e}", desc.digest))
}

pub fn list_tar(r: impl Read) -> std::io::Result<BTreeMap<String, FileMeta>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries()? {
        let mut e = entry?;
        let path = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let h = e.header();
        let mode = format!("{:04o}", h.mode()? & 0o7777);
        let kind = match h.entry_type() {
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            t if t.is_file() => "file",
            _ => "other",
        };
        let link = e.link_name()?.map(|l| l.to_string_lossy().into_owned());
        let size = e.size();
        let sha256 = if kind == "file" {
            let mut hasher = Sha256::new();
            std::io::copy(&mut e, &mut hasher)?;
            Some(hex::encode(hasher.finalize()))
        } else {
            None
        };
        out.insert(
            path.trim_end_matches('/').to_string(),
            FileMeta {
                kind,
                mode,
                size,
                sha256,
                link,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_files_with_mode_size_and_content_hash() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "app/main.py", &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let l = list_tar(&bytes[..]).unwrap();
        let m = &l["app/main.py"];
        assert_eq!((m.kind, m.mode.as_str(), m.size), ("file", "0644", 3));
        assert_eq!(
            m.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }
}
