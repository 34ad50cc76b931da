//! What an sdist says about how it is built: `[build-system]` of its
//! `pyproject.toml`, read from the archive without unpacking it (PEP 517,
//! PEP 518), with setuptools' legacy backend where it says nothing.

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// `pyproject.toml` larger than this is refused: no real one comes close.
const PYPROJECT_LIMIT: u64 = 1 << 20;
/// PEP 517's fallback for a tree without `build-backend`.
pub const LEGACY_BACKEND: &str = "setuptools.build_meta:__legacy__";
/// PEP 518's requirements for a tree without `[build-system]`.
const LEGACY_REQUIRES: &str = "setuptools>=40.8.0";

/// How to build one sdist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSystem {
    /// PEP 508 requirement strings.
    pub requires: Vec<String>,
    /// `module:object`.
    pub backend: String,
    /// Directories of the tree put first on `sys.path` (in-tree backends).
    pub backend_path: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Table {
    requires: Option<Vec<String>>,
    build_backend: Option<String>,
    #[serde(default)]
    backend_path: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Pyproject {
    #[serde(rename = "build-system")]
    build_system: Option<Table>,
}

/// Reads `<top>/pyproject.toml` from a `.tar.gz` or `.zip` sdist; the
/// message says what is wrong with the archive or the file.
pub fn read_build_system(sdist: &Path) -> Result<BuildSystem, String> {
    let name = sdist.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let text = if name.ends_with(".zip") {
        pyproject_from_zip(sdist)?
    } else {
        pyproject_from_tar(sdist)?
    };
    match text {
        Some(text) => parse(&text),
        None => Ok(legacy(Vec::new())),
    }
}

/// The build system a `pyproject.toml` names.
pub fn parse(text: &str) -> Result<BuildSystem, String> {
    let doc: Pyproject =
        toml::from_str(text).map_err(|e| format!("its pyproject.toml is not valid: {e}"))?;
    let Some(table) = doc.build_system else {
        return Ok(legacy(Vec::new()));
    };
    let requires = table
        .requires
        .unwrap_or_else(|| vec![LEGACY_REQUIRES.to_owned()]);
    for p in &table.backend_path {
        if p.starts_with('/') || p.split(['/', '\\']).any(|part| part == "..") {
            return Err(format!(
                "its pyproject.toml's backend-path `{p}` leaves the source tree"
            ));
        }
    }
    Ok(match table.build_backend {
        Some(backend) => BuildSystem {
            requires,
            backend,
            backend_path: table.backend_path,
        },
        None => legacy(requires),
    })
}

fn legacy(requires: Vec<String>) -> BuildSystem {
    BuildSystem {
        requires: if requires.is_empty() {
            vec![LEGACY_REQUIRES.to_owned()]
        } else {
            requires
        },
        backend: LEGACY_BACKEND.to_owned(),
        backend_path: Vec::new(),
    }
}

/// Whether an archive path is the top directory's `pyproject.toml`.
fn is_top_pyproject(path: &str) -> bool {
    let path = path.trim_start_matches("./");
    matches!(
        path.split('/').collect::<Vec<_>>()[..],
        [_, "pyproject.toml"]
    )
}

fn read_capped(r: impl Read, what: &str) -> Result<String, String> {
    let mut text = String::new();
    r.take(PYPROJECT_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read its {what}: {e}"))?;
    if text.len() as u64 > PYPROJECT_LIMIT {
        return Err(format!("its {what} is over 1 MiB"));
    }
    Ok(text)
}

fn pyproject_from_tar(sdist: &Path) -> Result<Option<String>, String> {
    let file = std::fs::File::open(sdist).map_err(|e| format!("cannot open it: {e}"))?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a .tar.gz archive: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("not a .tar.gz archive: {e}"))?;
        let path = entry.path_bytes();
        let path = String::from_utf8_lossy(&path).into_owned();
        if is_top_pyproject(&path) && entry.header().entry_type().is_file() {
            return read_capped(entry, "pyproject.toml").map(Some);
        }
    }
    Ok(None)
}

fn pyproject_from_zip(sdist: &Path) -> Result<Option<String>, String> {
    let file = std::fs::File::open(sdist).map_err(|e| format!("cannot open it: {e}"))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a .zip archive: {e}"))?;
    let Some(i) = (0..archive.len()).find(|&i| {
        archive
            .name_for_index(i)
            .and_then(|n| n.ok())
            .is_some_and(|n| is_top_pyproject(&n))
    }) else {
        return Ok(None);
    };
    let entry = archive
        .by_index(i)
        .map_err(|e| format!("not a .zip archive: {e}"))?;
    read_capped(entry, "pyproject.toml").map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_backend_is_used_with_its_requirements_and_path() {
        let got = parse(
            "[build-system]\nrequires = [\"hatchling>=1.20\"]\nbuild-backend = \"hatchling.build\"\nbackend-path = [\"_build\"]\n",
        )
        .unwrap();
        assert_eq!(
            got,
            BuildSystem {
                requires: vec!["hatchling>=1.20".into()],
                backend: "hatchling.build".into(),
                backend_path: vec!["_build".into()],
            }
        );
    }

    #[test]
    fn no_build_system_means_setuptools_legacy_backend() {
        for text in ["[project]\nname = \"x\"\n", "[build-system]\n"] {
            let got = parse(text).unwrap();
            assert_eq!(got.backend, LEGACY_BACKEND);
            assert_eq!(got.requires, ["setuptools>=40.8.0"]);
        }
        let got = parse("[build-system]\nrequires = [\"setuptools\", \"wheel\"]\n").unwrap();
        assert_eq!(
            (got.backend.as_str(), got.requires),
            (LEGACY_BACKEND, vec!["setuptools".into(), "wheel".into()])
        );
    }

    #[test]
    fn a_backend_path_outside_the_tree_is_refused() {
        let err = parse(
            "[build-system]\nrequires = []\nbuild-backend = \"b\"\nbackend-path = [\"../up\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("leaves the source tree"), "{err}");
    }

    #[test]
    fn the_top_directorys_pyproject_is_read_from_a_tar_gz() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkg-1.0.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, body) in [
            ("pkg-1.0/sub/pyproject.toml", "[build-system]\nbuild-backend = \"wrong\"\n"),
            ("pkg-1.0/pyproject.toml", "[build-system]\nrequires = [\"flit_core\"]\nbuild-backend = \"flit_core.buildapi\"\n"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        let got = read_build_system(&path).unwrap();
        assert_eq!(got.backend, "flit_core.buildapi");
    }
}
