//! Debian Python base images, built once by `scripts/build-base-image.sh` and cached
//! across test runs: bookworm's Python 3.11 for most tests, and the other Debian
//! suites' Pythons for the version matrix (tests/pythons_e2e.rs).
//!
//! The cache lives at `${IMGBUILD_TEST_CACHE:-$HOME/.cache/imgbuild-tests}`. A stamp
//! beside each layout records the hash of the script that built it, so editing the
//! script rebuilds. Test processes run in parallel, so building happens under `flock`:
//! the first one builds, the others wait and then find the stamp up to date.

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::Command;

/// The directory holding the cached base images.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMGBUILD_TEST_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set; set IMGBUILD_TEST_CACHE");
    PathBuf::from(home).join(".cache").join("imgbuild-tests")
}

/// The OCI layout directory (tag `latest`) of the bookworm Python 3.11 base image for
/// `arch` (`amd64` or `arm64`), building it first if the cache has none from the
/// current script. The first build takes about a minute for amd64 and several for
/// arm64 (emulated).
pub fn base_image(arch: &str) -> PathBuf {
    base_image_with(arch, &[])
}

/// Like [`base_image`], with extra Debian packages in it (e.g. `["libstdc++6"]`),
/// cached under its own name. The bookworm base has no libstdc++: wheels with C++
/// code (numpy, pandas) need this one.
pub fn base_image_with(arch: &str, packages: &[&str]) -> PathBuf {
    debian_python_base(arch, "bookworm", "python3", packages)
}

/// The base of Debian `suite` (bullseye, bookworm, trixie or sid) with the interpreter
/// package `python` (`python3`, the suite's own Python, or a versioned one such as
/// `python3.15` in sid) and extra `packages`, built by the script with SUITE and
/// PYTHON set and cached under its own name.
pub fn debian_python_base(arch: &str, suite: &str, python: &str, packages: &[&str]) -> PathBuf {
    assert!(
        arch == "amd64" || arch == "arm64",
        "base_image: unsupported arch {arch:?}; use amd64 or arm64"
    );
    let script = super::repo_root()
        .join("scripts")
        .join("build-base-image.sh");
    let script_bytes =
        std::fs::read(&script).unwrap_or_else(|e| panic!("cannot read {}: {e}", script.display()));
    let extra = packages.join(",");
    let mut hasher = Sha256::new();
    hasher.update(&script_bytes);
    if !extra.is_empty() {
        hasher.update(format!("\0{extra}").as_bytes());
    }
    // The bookworm python3 base keeps the stamp it always had.
    let default = suite == "bookworm" && python == "python3";
    if !default {
        hasher.update(format!("\0SUITE={suite}\0PYTHON={python}").as_bytes());
    }
    let hash = hex::encode(hasher.finalize());
    let mut name = format!("base-{suite}");
    if python != "python3" {
        name += &format!("-{python}");
    }
    name += &format!("-{arch}");
    if !packages.is_empty() {
        name += &format!("-{}", packages.join("-").replace('+', "p"));
    }

    let cache = cache_dir();
    std::fs::create_dir_all(&cache)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", cache.display()));
    let layout = cache.join(&name);
    let stamp = cache.join(format!("{name}.script-sha256"));
    let lock = cache.join(format!("{name}.lock"));

    // Checking and building inside one flock makes concurrent callers wait for a
    // single build instead of racing. The script replaces the layout by rename, and the
    // stamp is written only after it succeeded.
    let output = Command::new("flock")
        .arg(&lock)
        .args(["bash", "-c", CHECK_AND_BUILD, "build-base"])
        .arg(&script)
        .arg(arch)
        .arg(&layout)
        .arg(&stamp)
        .arg(&hash)
        .arg(&extra)
        .arg(suite)
        .arg(python)
        .output()
        .expect("cannot run flock (util-linux); run scripts/setup.sh");
    assert!(
        output.status.success(),
        "building the {arch} {suite} {python} base image with {} failed ({}):\n{}\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        layout.join("index.json").is_file(),
        "{} has no index.json after building",
        layout.display()
    );
    layout
}

/// `oci:DIR:latest`, the reference podman and skopeo take for [`base_image`].
pub fn base_image_ref(arch: &str) -> String {
    format!("oci:{}:latest", base_image(arch).display())
}

const CHECK_AND_BUILD: &str = r#"
set -e
script=$1 arch=$2 layout=$3 stamp=$4 hash=$5 extra=$6 suite=$7 python=$8
if [ -f "$layout/index.json" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
  exit 0
fi
rm -f "$stamp"
SUITE=$suite PYTHON=$python bash "$script" "$arch" "$layout" $extra
printf '%s' "$hash" > "$stamp.tmp"
mv "$stamp.tmp" "$stamp"
"#;

/// An OCI layout whose index offers both Debian bases, like a multi-platform base on a registry.
pub fn multiarch_base() -> PathBuf {
    multiarch_of(&[
        (base_image("amd64"), "amd64", None),
        (base_image("arm64"), "arm64", Some("v8")),
    ])
}

/// An OCI layout whose `latest` is an index over each (layout, arch, variant).
#[allow(dead_code)]
pub fn multiarch_of(layouts: &[(PathBuf, &str, Option<&str>)]) -> PathBuf {
    let dir = super::target_tempdir("multiarch-base-").keep();
    let mut manifests = Vec::new();
    for (layout, arch, variant) in layouts {
        let (arch, variant) = (*arch, *variant);
        let src_blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        for e in std::fs::read_dir(&src_blobs).unwrap() {
            let e = e.unwrap();
            let dest = dir.join("blobs/sha256").join(e.file_name());
            if !dest.exists() {
                std::fs::hard_link(e.path(), &dest)
                    .or_else(|_| std::fs::copy(e.path(), &dest).map(drop))
                    .unwrap();
            }
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let mut m = index["manifests"][0].clone();
        m.as_object_mut().unwrap().remove("annotations");
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        m["platform"] = platform;
        manifests.push(m);
    }
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests
    }))
    .unwrap();
    let inner_digest = imgbuild::digest::Digest::of_bytes(&inner);
    std::fs::write(dir.join("blobs/sha256").join(inner_digest.hex()), &inner).unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": inner_digest.to_string(), "size": inner.len(),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir
}

/// A copy of the OCI layout `layout` (tag `latest`) whose gzip layers are recompressed
/// as zstd (`tar+zstd`, as Docker Hardened Images ship them), written to a fresh
/// directory. The config is kept byte for byte: the diff_ids, hashes of the
/// uncompressed tars, stay right.
pub fn zstd_copy(layout: &std::path::Path) -> PathBuf {
    use std::io::Read;
    let dir = super::target_tempdir("zstd-base-").keep();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let read_json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(digest.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let index = read_json(layout.join("index.json"));
    let top = &index["manifests"][0];
    let mut manifest = read_json(blob(&top["digest"]));
    assert!(
        manifest["layers"].is_array(),
        "{} is not a single-platform layout",
        layout.display()
    );
    std::fs::copy(
        blob(&manifest["config"]["digest"]),
        blob(&manifest["config"]["digest"])
            .file_name()
            .map(|n| blobs.join(n))
            .unwrap(),
    )
    .unwrap();
    for l in manifest["layers"].as_array_mut().unwrap() {
        let media_type = l["mediaType"].as_str().unwrap();
        assert!(media_type.ends_with("gzip"), "layer of type {media_type}");
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(blob(&l["digest"])).unwrap())
            .read_to_end(&mut tar)
            .unwrap();
        let (digest, size) = put(&zstd::encode_all(&tar[..], 3).unwrap());
        l["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into();
        l["digest"] = digest.into();
        l["size"] = size.into();
    }
    let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "platform": top["platform"],
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir
}

/// A copy of the single-platform OCI layout `layout` (tag `latest`) with one
/// more layer on top holding `files` (path in the image, content), as a base
/// someone changed would be: the manifest and the config's diff_ids say so.
pub fn with_files(layout: &std::path::Path, files: &[(&str, &[u8])]) -> PathBuf {
    use std::io::Write;
    let dir = super::target_tempdir("changed-base-").keep();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let dest = blobs.join(e.file_name());
        std::fs::hard_link(e.path(), &dest)
            .or_else(|_| std::fs::copy(e.path(), &dest).map(drop))
            .unwrap();
    }
    let read_json = |digest: &serde_json::Value| -> serde_json::Value {
        let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(blobs.join(hex)).unwrap()).unwrap()
    };
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1);
        header.set_cksum();
        tar.append_data(&mut header, path.trim_start_matches('/'), *content)
            .unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let (layer_digest, layer_size) = put(&gz.finish().unwrap());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let top = &index["manifests"][0];
    let mut manifest = read_json(&top["digest"]);
    let mut config = read_json(&manifest["config"]["digest"]);
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(diff_id.into());
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_size.into();
    manifest["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest, "size": layer_size,
        }));
    let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size, "platform": top["platform"],
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir
}
