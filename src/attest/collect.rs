//! Gathers an [`AttestInput`] from a finished build: the spec, one platform's
//! image, and the wheels in the cache (for their licences).

use super::{licence, AttestError, AttestInput, Material, PackageInfo};
use crate::digest::Digest;
use crate::image::{ANNOTATION_BASE_DIGEST, ANNOTATION_BASE_NAME};
use crate::output::BuiltImage;
use crate::platform::Platform;
use crate::spec::{keys_by_provenance, Provenance, Spec};
use crate::store::Store;
use serde_json::json;
use std::path::{Component, Path, PathBuf};

/// Bumped when reading a licence from METADATA changes, so cached answers are not reused.
const LICENCE_VERSION: u32 = 1;

/// `image_name` names the image in the documents (a repository, or the app).
pub fn collect(
    spec: &Spec,
    image: &BuiltImage,
    platforms: &[Platform],
    store: &Store,
    epoch: u64,
    image_name: &str,
) -> Result<AttestInput, AttestError> {
    let manifest: crate::image::Manifest =
        serde_json::from_slice(&image.manifest).map_err(|source| AttestError::Json {
            what: "manifest",
            source,
        })?;
    let config: serde_json::Value =
        serde_json::from_slice(&image.config).map_err(|source| AttestError::Json {
            what: "config",
            source,
        })?;
    let annotation = |k: &str| {
        manifest
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
    };
    let base_digest = annotation(ANNOTATION_BASE_DIGEST)
        .and_then(|d| d.parse::<Digest>().ok())
        .unwrap_or_else(|| Digest::of_bytes(b""));
    let packages = image
        .packages
        .iter()
        .map(|w| package_info(w, &image.sdist_builds, store))
        .collect::<Result<Vec<_>, _>>()?;
    let spec_dir = spec.file.parent().unwrap_or(Path::new("."));
    let lockfile = match &spec.lockfile {
        Some(l) => Some(lockfile_material(l, spec_dir)?),
        None => None,
    };
    let source_tree = image.source_tree.clone().map(|digest| Material {
        name: "source".into(),
        uri: spec
            .source_url
            .clone()
            .unwrap_or_else(|| relative(&spec.source, spec_dir)),
        digest,
    });
    let (app_name, app_version) = app_identity(&spec.source);
    Ok(AttestInput {
        image_name: image_name.to_string(),
        digest: image.manifest_digest.clone(),
        platform: image.platform.clone(),
        created: config["created"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| crate::image::time::rfc3339(epoch)),
        base_name: annotation(ANNOTATION_BASE_NAME).unwrap_or_else(|| spec.base.clone()),
        base_digest,
        app_name,
        app_version,
        packages,
        parameters: parameters(spec, platforms),
        lockfile,
        source_tree,
        source_url: spec.source_url.clone(),
        revision: spec.revision.clone(),
        epoch,
        rebased: None,
    })
}

/// What the documents say of one installed wheel.
fn package_info(
    w: &crate::lock::select::SelectedWheel,
    builds: &[crate::sdist::Built],
    store: &Store,
) -> Result<PackageInfo, AttestError> {
    // A package built from its sdist: the licence is in the built wheel.
    let built = builds
        .iter()
        .find(|b| w.from_sdist && b.name == w.name && b.version == w.version)
        .map(|b| {
            let mut b = b.clone();
            for pin in &mut b.requirements {
                pin.url = without_userinfo(&pin.url);
            }
            b
        });
    let licence = match &built {
        Some(b) => wheel_licence(&b.wheel(None), store)?,
        None if w.from_sdist => None,
        None => wheel_licence(w, store)?,
    };
    Ok(PackageInfo {
        name: w.name.clone(),
        version: w.version.clone(),
        filename: w.filename.clone(),
        url: w.url.as_deref().map(without_userinfo),
        sha256: w.sha256.to_ascii_lowercase(),
        licence,
        built,
    })
}

/// The wheel's licence, read from its METADATA once per wheel (it is
/// content-addressed): every push, a no-op one included, makes its SBOM
/// before it knows one is attached. A wheel no longer in the cache still has
/// a name, version and hash; only its licence is unknown.
fn wheel_licence(
    w: &crate::lock::select::SelectedWheel,
    store: &Store,
) -> Result<Option<licence::Licence>, AttestError> {
    let wheel = Digest::from_hex(&w.sha256.to_ascii_lowercase())
        .ok()
        .map(|d| store.blob_path(&d));
    let key = format!(
        "licence-v{LICENCE_VERSION}:{}",
        w.sha256.to_ascii_lowercase()
    );
    Ok(
        match store.get_meta::<Option<licence::Licence>>("licence", &key) {
            Some(known) => known,
            None => match wheel.filter(|p| p.exists()) {
                Some(p) => {
                    let read = licence::from_wheel(&p).map_err(|source| AttestError::Read {
                        path: PathBuf::from(&w.filename),
                        source,
                    })?;
                    // A failed cache write only costs the next push a re-read.
                    store.put_meta_best_effort("licence", &key, &read);
                    read
                }
                None => None,
            },
        },
    )
}

/// The lockfile as a material: its digest, named relative to the spec.
fn lockfile_material(lockfile: &Path, spec_dir: &Path) -> Result<Material, AttestError> {
    let read = |source| AttestError::Read {
        path: lockfile.to_path_buf(),
        source,
    };
    let (digest, _) =
        Digest::of_reader(std::fs::File::open(lockfile).map_err(read)?).map_err(read)?;
    Ok(Material {
        name: "lockfile".into(),
        uri: relative(lockfile, spec_dir),
        digest,
    })
}

/// The spec's settings that can change the image, as the user wrote them,
/// and the platforms; no host paths (paths are relative to the spec), no
/// index URL (it may hold a token). Which settings: the spec's key table
/// says, so a new key is recorded or left out on purpose.
pub fn parameters(spec: &Spec, platforms: &[Platform]) -> serde_json::Value {
    let spec_dir = spec.file.parent().unwrap_or(Path::new("."));
    let platforms: Vec<String> = if platforms.is_empty() {
        spec.platforms.iter().map(|p| p.to_string()).collect()
    } else {
        platforms.iter().map(|p| p.to_string()).collect()
    };
    let mut settings = serde_json::Map::new();
    let file = spec.file.file_name().and_then(|n| n.to_str());
    settings.insert("file".into(), json!(file.unwrap_or("")));
    for (key, provenance) in keys_by_provenance() {
        if provenance != Provenance::Recorded {
            continue;
        }
        if let Some(value) = recorded_value(spec, key, spec_dir) {
            settings.insert(key.replace('-', "_"), value);
        }
    }
    json!({
        "spec": settings,
        "platforms": platforms,
    })
}

/// The value provenance records for setting `key`; None for a key it does
/// not record (a test checks these are exactly the table's `Recorded` ones).
fn recorded_value(spec: &Spec, key: &str, spec_dir: &Path) -> Option<serde_json::Value> {
    let relative_to_spec = |p: &PathBuf| relative(p, spec_dir);
    Some(match key {
        "base" => json!(spec.base),
        "source" => json!(relative(&spec.source, spec_dir)),
        "lockfile" => json!(spec.lockfile.as_ref().map(relative_to_spec)),
        "workdir" => json!(spec.workdir.absolute()),
        "venv" => json!(spec.venv.absolute()),
        "app" => json!(spec.app_setting()),
        "app-dir" => json!(spec.app_dir),
        "port" => json!(spec.port),
        "workers" => json!(spec.workers),
        "proxy-headers" => json!(spec.proxy_headers),
        "user" => json!(format!("{}:{}", spec.user.0, spec.user.1)),
        "env" => json!(spec.env),
        "labels" => json!(spec.labels),
        "annotations" => json!(spec.annotations),
        "entrypoint" => json!(spec.entrypoint),
        "cmd" => json!(spec.cmd),
        "groups" => json!(spec.groups),
        "extras" => json!(spec.extras),
        "include-dev" => json!(spec.include_dev),
        "layer-budget" => json!(spec.layer_budget),
        "exclude" => json!(spec.exclude),
        "package" => json!(spec.package),
        "writable" => json!(spec
            .writable
            .iter()
            .map(|p| p.absolute())
            .collect::<Vec<_>>()),
        "source-url" => json!(spec.source_url),
        "revision" => json!(spec.revision),
        "project-wheel" => json!(spec.project_wheel.as_ref().map(relative_to_spec)),
        "bytecode" => json!(spec.bytecode.to_setting()),
        "bytecode-stdlib" => json!(spec.bytecode_stdlib),
        "compression" => json!(spec.compression.name()),
        _ => return None,
    })
}

/// `[project] name` and `version` from the source's pyproject.toml, else the
/// directory's name.
pub fn app_identity(source: &Path) -> (String, Option<String>) {
    let place = crate::project_file::Place::Within(source);
    let limit = crate::project_file::SETTINGS_LIMIT;
    let project = crate::project_file::read_text(&source.join("pyproject.toml"), place, limit)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("project")?.as_table().cloned());
    let name = project
        .as_ref()
        .and_then(|p| p.get("name")?.as_str().map(str::to_string))
        .or_else(|| source.file_name()?.to_str().map(str::to_string))
        .unwrap_or_else(|| "app".into());
    let version = project.and_then(|p| p.get("version")?.as_str().map(str::to_string));
    (name, version)
}

/// A URL without `user:password@`: credentials never go into documents.
pub fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// `path` relative to `base` (both absolute), with `..` where needed.
pub fn relative(path: &Path, base: &Path) -> String {
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    let s = out.to_string_lossy().into_owned();
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `settings` (lines of imgbuild.toml) after `base` and `app`, parsed
    /// from a temporary project directory.
    fn spec_with(settings: &str) -> (tempfile::TempDir, Spec) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("base = \"python:3.12-slim\"\napp = \"main:app\"\n{settings}");
        let file = dir.path().join("imgbuild.toml");
        std::fs::write(&file, &text).unwrap();
        let spec = crate::spec::parse(&text, &file, false, dir.path()).unwrap();
        (dir, spec)
    }

    #[test]
    fn provenance_records_exactly_the_settings_that_can_change_the_image() {
        let (dir, spec) = spec_with("");
        for (key, provenance) in keys_by_provenance() {
            let recorded = recorded_value(&spec, key, dir.path()).is_some();
            assert_eq!(
                recorded,
                provenance == Provenance::Recorded,
                "{key} is {provenance:?} in the key table (src/spec/keys.rs), \
                 but provenance {} it",
                if recorded {
                    "records"
                } else {
                    "does not record"
                }
            );
        }
    }

    #[test]
    fn provenance_of_a_build_without_bytecode_and_with_zstd_records_both() {
        let (_dir, spec) = spec_with("bytecode = false\ncompression = \"zstd\"\n");
        let input = AttestInput {
            parameters: parameters(&spec, &[]),
            ..crate::attest::sbom::tests::input()
        };
        let statement = crate::attest::provenance::statement(&input);
        let recorded = &statement["predicate"]["buildDefinition"]["externalParameters"]["spec"];
        assert_eq!(recorded["bytecode"], json!(false));
        assert_eq!(recorded["compression"], json!("zstd"));
        assert_eq!(recorded["bytecode_stdlib"], json!(true));

        let (_dir, spec) = spec_with("bytecode = \"unchecked-hash\"\n");
        let recorded = &parameters(&spec, &[])["spec"];
        assert_eq!(recorded["bytecode"], json!("unchecked-hash"));
        assert_eq!(recorded["compression"], json!("gzip"));
    }

    #[test]
    fn settings_that_cannot_change_the_image_are_not_recorded() {
        let (_dir, spec) = spec_with(
            "index-url = \"https://user:token@index.example.invalid/simple\"\n\
             health = \"/health\"\nimage = \"registry.example.invalid/team/api\"\n",
        );
        let recorded = parameters(&spec, &[])["spec"].clone();
        for key in [
            "index_url",
            "health",
            "image",
            "deploy",
            "init",
            "platforms",
        ] {
            assert!(recorded.get(key).is_none(), "{key} in {recorded}");
        }
        assert_eq!(recorded["file"], "imgbuild.toml");
    }

    #[test]
    fn relative_paths_climb_out_of_the_spec_directory() {
        assert_eq!(
            relative(Path::new("/r/fixtures/app"), Path::new("/r/images")),
            "../fixtures/app"
        );
        assert_eq!(
            relative(Path::new("/r/images"), Path::new("/r/images")),
            "."
        );
        assert_eq!(
            relative(Path::new("/r/images/uv.lock"), Path::new("/r/images")),
            "uv.lock"
        );
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            without_userinfo("https://user:secret@index.example.invalid/p/a.whl"),
            "https://index.example.invalid/p/a.whl"
        );
        assert_eq!(
            without_userinfo("https://index.example.invalid/p/a@1.whl"),
            "https://index.example.invalid/p/a@1.whl"
        );
    }

    #[test]
    fn app_identity_reads_pyproject_else_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let app = d.path().join("svc");
        std::fs::create_dir(&app).unwrap();
        assert_eq!(app_identity(&app), ("svc".to_string(), None));
        std::fs::write(
            app.join("pyproject.toml"),
            "[project]\nname = \"hello-api\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        assert_eq!(
            app_identity(&app),
            ("hello-api".to_string(), Some("0.1.0".to_string()))
        );
    }
}
