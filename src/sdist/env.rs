//! A build environment on disk: the pinned wheels unpacked into one
//! directory the sandboxed interpreter puts on `sys.path` (as pip's isolated
//! build environments do), made once per set of pins and then reused.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// A wheel member larger than this is refused (backends are small).
const MEMBER_LIMIT: u64 = 256 << 20;

/// Where `member` goes in the environment: purelib and platlib data at the
/// top, scripts and headers and data left out (a build needs none of them);
/// None for a member to skip. A name that would leave the directory is an error.
fn destination(member: &str) -> Result<Option<PathBuf>, String> {
    let path = Path::new(member);
    if path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!("member `{member}` would leave its directory"));
    }
    let mut parts = member.splitn(3, '/');
    let top = parts.next().unwrap_or("");
    if top.ends_with(".data") {
        return Ok(match (parts.next(), parts.next()) {
            (Some("purelib" | "platlib"), Some(rest)) if !rest.is_empty() => Some(rest.into()),
            _ => None,
        });
    }
    Ok(Some(path.to_path_buf()))
}

/// Unpacks `wheel` into `dir`.
pub fn unpack_wheel(wheel: &Path, dir: &Path) -> Result<(), String> {
    let file = std::fs::File::open(wheel).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a wheel: {e}"))?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().map_err(|e| e.to_string())?.into_owned();
        let Some(rel) = destination(&name)? else {
            continue;
        };
        let out = dir.join(&rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let mut f = std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let copied = io::copy(&mut (&mut entry).take(MEMBER_LIMIT + 1), &mut f)
            .map_err(|e| format!("{}: {e}", rel.display()))?;
        if copied > MEMBER_LIMIT {
            return Err(format!("member {} is over 256 MiB", rel.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purelib_data_goes_to_the_top_and_escapes_are_refused() {
        assert_eq!(
            destination("pkg/__init__.py").unwrap(),
            Some("pkg/__init__.py".into())
        );
        assert_eq!(
            destination("x-1.data/purelib/x/a.py").unwrap(),
            Some("x/a.py".into())
        );
        assert_eq!(destination("x-1.data/scripts/tool").unwrap(), None);
        assert!(destination("../evil.py").is_err());
        assert!(destination("/etc/passwd").is_err());
        assert!(destination("pkg/../../evil.py").is_err());
    }
}
