//! Bytecode (issue 9): every image carries hash-based pycs compiled by the base's
//! own interpreter, byte-identical whoever builds it and wherever, and Python uses
//! them instead of compiling at start.

mod support;
// Synthetic wheels with a correct RECORD; this crate uses only part of the helpers.
#[allow(dead_code)]
mod wheel_support;

use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::layout::{blob_json, json_file};

fn imgbuild(cwd: &Path, args: &[&str]) -> Output {
    support::imgbuild_command(cwd, args)
        .output()
        .expect("run imgbuild")
}

fn digest_of(o: &Output) -> String {
    support::last_line(o, "imgbuild")
}

/// Removes a test's project directory (caches and outputs of several hundred MiB) when dropped.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A locked copy of a fixture, with a copy of the amd64 Debian base beside it (so
/// another user can read it) and a spec on it (bytecode on by default).
fn locked_project(fixture: &str, app: &str, extra: &str) -> PathBuf {
    let dir = support::uv::uv_lock(&support::fixture(fixture));
    let status = Command::new("cp")
        .arg("-r")
        .arg(support::base::base_image("amd64"))
        .arg(dir.join("base"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "base = \"oci:base:latest\"\napp = \"{app}\"\nexclude = [\"base\", \"*.tar\"]\n{extra}"
        ),
    )
    .unwrap();
    dir
}

/// Copies `project` (not yet built) to a deeper path in a fresh world-readable temp
/// dir, under umask 077 with every mtime set to 2001, then opens it to another user.
fn scrambled_copy(project: &Path, tmp: &Path) -> PathBuf {
    std::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let to = tmp.join("b/much/deeper/checkout");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077 && mkdir -p '{0}' && cp -r '{1}/.' '{0}/' && find '{0}' -exec touch -d '2001-02-03 04:05:06' {{}} + && chmod -R a+rwX '{2}'",
            to.display(),
            project.display(),
            tmp.join("b").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    to
}

/// Builds `project` as user nobody in another time zone, with its own cold cache.
fn build_as_nobody(project: &Path) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["build", "--output", "oci:out", "--cache-dir", "cache"])
        .current_dir(project)
        .env("HOME", project)
        .env("TZ", "Pacific/Chatham")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

/// Every file of the image's own layers (the base's left out): path → contents.
fn own_files(layout: &Path) -> BTreeMap<String, Vec<u8>> {
    let index = json_file(&layout.join("index.json"));
    let manifest = blob_json(layout, &index["manifests"][0]["digest"]);
    let base = support::base::base_image("amd64");
    let mut files = BTreeMap::new();
    for l in manifest["layers"].as_array().unwrap() {
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        if base.join("blobs/sha256").join(hex).exists() {
            continue;
        }
        let blob = std::fs::File::open(layout.join("blobs/sha256").join(hex)).unwrap();
        let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(blob));
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
    }
    files
}

/// `dir/__pycache__/name.cpython-311.pyc` for `dir/name.py`.
fn pyc_for(py: &str) -> String {
    let (dir, name) = py.rsplit_once('/').unwrap_or(("", py));
    let stem = name.strip_suffix(".py").unwrap();
    format!("{dir}/__pycache__/{stem}.cpython-311.pyc")
}

/// The sources imgbuild said (under -v) it skipped.
fn skipped(stderr: &str) -> BTreeSet<String> {
    stderr
        .lines()
        .filter_map(|l| l.split_once("no bytecode for /"))
        .map(|(_, rest)| rest.split([',', ':']).next().unwrap().to_string())
        .collect()
}

#[test]
fn hello_api_and_other_api_have_complete_reproducible_bytecode() {
    // other-api with a small layer budget: its smallest packages share a merged layer.
    for (fixture, app, extra) in [
        ("hello-api", "hello_api.main:app", ""),
        // other-api locks no uvicorn: it runs Python, as in deps_e2e.
        (
            "other-api",
            "other_api.app:app",
            "layer-budget = 8\ncmd = [\"python\", \"-c\", \"import other_api.app\"]\n",
        ),
    ] {
        let a = locked_project(fixture, app, extra);
        let _removed = Removed(a.clone());
        let tmp = tempfile::tempdir().unwrap();
        let b = scrambled_copy(&a, tmp.path());
        // A: a plain build, verbose to list skipped sources.
        let out_a = imgbuild(
            &a,
            &["-v", "build", "--output", "oci:out", "--cache-dir", "cache"],
        );
        let digest_a = digest_of(&out_a);
        let skipped = skipped(&String::from_utf8_lossy(&out_a.stderr));

        // B: a deeper path, umask 077, new mtimes, another user and time zone, a cold cache.
        let digest_b = digest_of(&build_as_nobody(&b));
        assert_eq!(
            digest_a, digest_b,
            "{fixture}: another path, umask, mtimes, user, TZ or cache changed the digest"
        );

        // Every .py of every package and of the app has its hash-based pyc.
        let files = own_files(&a.join("out"));
        let sources: Vec<&String> = files
            .keys()
            .filter(|p| p.ends_with(".py") && !skipped.contains(*p))
            .collect();
        assert!(
            sources.len() > 100,
            "{fixture}: only {} sources",
            sources.len()
        );
        for py in sources {
            let pyc = files
                .get(&pyc_for(py))
                .unwrap_or_else(|| panic!("{fixture}: no pyc for /{py}"));
            let flags = u32::from_le_bytes(pyc[4..8].try_into().unwrap());
            assert_eq!(flags, 0b11, "{fixture}: /{py}'s pyc is not checked-hash");
        }
        // The standard library's pycs came in a layer of their own (the base has none).
        assert!(
            files.contains_key("usr/lib/python3.11/__pycache__/os.cpython-311.pyc"),
            "{fixture}: no stdlib pycs"
        );
    }
}

#[test]
fn a_package_compiled_alone_is_byte_identical_to_the_same_package_in_a_build() {
    // hello-api's typing-extensions layer, against a project locking only typing-extensions.
    let full = locked_project(
        "hello-api",
        "hello_api.main:app",
        "bytecode-stdlib = false\n",
    );
    let _removed = Removed(full.clone());
    digest_of(&imgbuild(
        &full,
        &["build", "--output", "oci:out", "--cache-dir", "cache"],
    ));
    let lock = std::fs::read_to_string(full.join("uv.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.lines().any(|l| l == "name = \"typing-extensions\""))
        .and_then(|p| p.lines().find(|l| l.starts_with("version = ")))
        .map(|l| {
            l.trim_start_matches("version = ")
                .trim_matches('"')
                .to_string()
        })
        .expect("typing-extensions in hello-api's lock");
    let alone = support::target_tempdir("alone-").keep();
    std::fs::write(
        alone.join("pyproject.toml"),
        format!("[project]\nname = \"alone\"\nversion = \"0\"\nrequires-python = \">=3.11\"\ndependencies = [\"typing-extensions=={version}\"]\n[tool.uv]\npackage = false\n"),
    )
    .unwrap();
    let _removed_pyproject = Removed(alone.clone());
    let alone = support::uv::uv_lock(&alone);
    let _removed_alone = Removed(alone.clone());
    let base = support::base::base_image("amd64");
    // The app must be there to pass the pre-ship check; it runs Python, not uvicorn.
    std::fs::write(alone.join("main.py"), "app = None\n").unwrap();
    std::fs::write(
        alone.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\napp = \"main:app\"\ncmd = [\"python\", \"-c\", \"import main\"]\nbytecode-stdlib = false\n",
            base.display()
        ),
    )
    .unwrap();
    digest_of(&imgbuild(
        &alone,
        &["build", "--output", "oci:out", "--cache-dir", "cache"],
    ));
    let pycs = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        own_files(&dir.join("out"))
            .into_iter()
            .filter(|(p, _)| {
                p.contains("/site-packages/typing_extensions")
                    || p.contains("/site-packages/__pycache__/typing_extensions")
            })
            .filter(|(p, _)| p.ends_with(".pyc"))
            .collect()
    };
    let (in_build, by_itself) = (pycs(&full), pycs(&alone));
    assert!(
        !in_build.is_empty(),
        "no typing_extensions pycs in the full build"
    );
    assert_eq!(in_build, by_itself);
}

#[test]
fn python_loads_the_pycs_and_compiles_nothing_at_start() {
    let project = locked_project("hello-api", "hello_api.main:app", "");
    let _removed = Removed(project.clone());
    let archive = project.join("image.tar");
    digest_of(&imgbuild(
        &project,
        &[
            "build",
            "--output",
            &format!("docker-archive:{}", archive.display()),
            "--cache-dir",
            "cache",
        ],
    ));
    let image = support::podman::import(&format!("docker-archive:{}", archive.display()), None);
    // -v reports "code object from '<x>.py'" for every module compiled from source.
    let run = support::podman::run_to_completion_with(
        &["--read-only", "--entrypoint", "/app/.venv/bin/python"],
        &image,
        &[
            "-v",
            "-X",
            "importtime",
            "-c",
            "import uvicorn.main, hello_api.main",
        ],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    let compiled = support::podman::compiled_at_start(&run.stderr);
    assert!(compiled.is_empty(), "compiled at start: {compiled:#?}");
    assert!(run.stderr.contains("import time:") && run.stderr.contains("hello_api.main"));
    assert!(run.stderr.contains(
        "/app/hello_api/__pycache__/main.cpython-311.pyc matches /app/hello_api/main.py"
    ));
    support::podman::remove_image(&image);
}

#[test]
fn arm64_pycs_are_compiled_under_qemu_and_load() {
    let tmp = support::target_tempdir("bytecode-arm64-");
    let base = support::base::base_image("arm64");
    // No lockfile: the app layer's own pycs are what this test loads.
    let source = support::fixture_without_dependencies("hello-api", &tmp.path().join("hello-api"));
    std::fs::write(
        tmp.path().join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\nsource = \"{}\"\napp = \"hello_api.main:app\"\nplatforms = [\"linux/arm64\"]\nbytecode-stdlib = false\nexclude = [\"cache\", \"out\"]\n",
            base.display(),
            source.display()
        ),
    )
    .unwrap();
    digest_of(&imgbuild(
        tmp.path(),
        &["build", "--output", "oci:out", "--cache-dir", "cache"],
    ));
    let image = support::podman::import(
        &format!("oci:{}:latest", tmp.path().join("out").display()),
        Some("linux/arm64"),
    );
    let run = support::podman::run_to_completion_with(
        &[
            "--platform",
            "linux/arm64",
            "--read-only",
            "--entrypoint",
            "/app/.venv/bin/python",
        ],
        &image,
        &["-v", "-c", "import hello_api"],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("/app/hello_api/__pycache__/__init__.cpython-311.pyc matches"),
        "{}",
        run.stderr
    );
    support::podman::remove_image(&image);
}

#[test]
fn a_package_source_that_does_not_compile_is_skipped_and_listed_under_verbose() {
    let tmp = support::target_tempdir("bytecode-py2-");
    let dir = tmp.path();
    // A package with a Python 2 leftover beside a good module, as some sdists ship.
    let wheel = wheel_support::SyntheticWheel::new("legacy", "1.0", "py3-none-any", true)
        .file("legacy/__init__.py", b"", 0o644)
        .file("legacy/good.py", b"VALUE = 1\n", 0o644)
        .file("legacy/py2.py", b"import sys\nprint 'hello'\n", 0o644)
        .write(dir);
    let (sha, _) =
        imgbuild::digest::Digest::of_reader(std::fs::File::open(&wheel).unwrap()).unwrap();
    std::fs::write(
        dir.join("pylock.toml"),
        format!(
            "lock-version = \"1.0\"\ncreated-by = \"test\"\n\n[[packages]]\nname = \"legacy\"\nversion = \"1.0\"\nwheels = [{{ path = \"{}\", hashes = {{ sha256 = \"{}\" }} }}]\n",
            wheel.file_name().unwrap().to_string_lossy(),
            sha.hex()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/main.py"), "import legacy.good\napp = None\n").unwrap();
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\nsource = \"src\"\nlockfile = \"pylock.toml\"\napp = \"main:app\"\ncmd = [\"python\", \"-c\", \"import main\"]\nbytecode-stdlib = false\n",
            support::base::base_image("amd64").display()
        ),
    )
    .unwrap();
    let out = imgbuild(
        dir,
        &["-v", "build", "--output", "oci:out", "--cache-dir", "cache"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let files = own_files(&dir.join("out"));
    let package = files
        .keys()
        .find_map(|p| p.strip_suffix("legacy/good.py"))
        .expect("legacy installed")
        .to_owned();
    let path = |rel: &str| format!("{package}legacy/{rel}");
    assert!(files.contains_key(&path("py2.py")), "the source is kept");
    assert!(files.contains_key(&path("__pycache__/good.cpython-311.pyc")));
    assert!(files.contains_key(&path("__pycache__/__init__.cpython-311.pyc")));
    assert!(!files.contains_key(&path("__pycache__/py2.cpython-311.pyc")));
    assert_eq!(
        skipped(&stderr),
        BTreeSet::from([path("py2.py")]),
        "{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("no bytecode for /"))
        .unwrap();
    assert!(
        line.contains("legacy 1.0") && line.contains("line 2") && line.contains("SyntaxError"),
        "{line}"
    );
    // Without -v (and with a cold cache, so it is compiled again), nothing is said about it.
    let quiet = imgbuild(
        dir,
        &["build", "--output", "oci:out2", "--cache-dir", "cache2"],
    );
    assert!(quiet.status.success());
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("py2.py"));
}

#[test]
fn bad_app_source_and_unrunnable_bases_fail_in_one_line() {
    let tmp = support::target_tempdir("bytecode-bad-");
    let dir = tmp.path();
    let base = support::base::base_image("amd64");
    std::fs::create_dir_all(dir.join("src/pkg")).unwrap();
    std::fs::write(dir.join("src/pkg/__init__.py"), "").unwrap();
    std::fs::write(
        dir.join("src/pkg/main.py"),
        "app = 1\n\ndef broken(:\n    pass\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\nsource = \"src\"\napp = \"pkg.main:app\"\nbytecode-stdlib = false\n",
            base.display()
        ),
    )
    .unwrap();
    let stderr = refused_build(dir);
    assert!(
        stderr.contains("/app/pkg/main.py, line 3") && stderr.contains("SyntaxError"),
        "{stderr}"
    );

    // The synthetic base's "python" is only an ELF header: it cannot start.
    support::synthetic::write_base(&dir.join("synthetic"));
    std::fs::write(dir.join("src/pkg/main.py"), "app = 1\n").unwrap();
    std::fs::write(
        dir.join("imgbuild.toml"),
        "base = \"oci:synthetic:latest\"\nsource = \"src\"\napp = \"pkg.main:app\"\n",
    )
    .unwrap();
    let stderr = refused_build(dir);
    assert!(
        stderr.contains("cannot run here") && stderr.contains("bytecode = false"),
        "{stderr}"
    );
}

#[test]
fn a_wheel_failing_its_hash_while_the_stdlib_compiles_fails_in_one_line_and_writes_nothing() {
    // The wheels are fetched beside the standard library's compile (the base has
    // no stdlib pycs): a fetch that fails must still end the build in one line.
    let project = locked_project("hello-api", "hello_api.main:app", "");
    let _removed = Removed(project.clone());
    let lock = project.join("uv.lock");
    // Every file of h11 (its sdist and its wheel) gets a hash no index publishes.
    let text = std::fs::read_to_string(&lock).unwrap();
    std::fs::write(&lock, support::uv::with_zeroed_hashes(&text, "h11")).unwrap();
    let line = refused_build(&project);
    assert!(
        line.contains("h11") && line.contains("do not match the lock's sha256"),
        "{line}"
    );
}

/// `imgbuild build` in `dir`, which must fail with a last line `error: …` and
/// write no output; returns that line.
fn refused_build(dir: &Path) -> String {
    let out = imgbuild(
        dir,
        &["build", "--output", "oci:out", "--cache-dir", "cache"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or("").to_owned();
    assert!(line.starts_with("error: "), "{line}");
    assert!(!dir.join("out").exists(), "an output was written");
    line
}

#[test]
fn a_cached_app_pyc_with_a_flipped_byte_is_compiled_again_and_the_image_is_unchanged() {
    let tmp = support::target_tempdir("bytecode-flip-");
    let dir = tmp.path();
    let base = support::base::base_image("amd64");
    std::fs::create_dir_all(dir.join("src/pkg")).unwrap();
    std::fs::write(dir.join("src/pkg/__init__.py"), "").unwrap();
    std::fs::write(dir.join("src/pkg/main.py"), "app = 1\n").unwrap();
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\nsource = \"src\"\napp = \"pkg.main:app\"\nbytecode-stdlib = false\n",
            base.display()
        ),
    )
    .unwrap();
    let build = |out: &str| {
        digest_of(&imgbuild(
            dir,
            &["build", "--output", out, "--cache-dir", "cache"],
        ))
    };
    let first = build("oci:a");
    let pycs: Vec<PathBuf> = std::fs::read_dir(dir.join("cache/bytecode/pycs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(pycs.len(), 2, "one cached pyc per app source");
    for p in &pycs {
        let mut bytes = std::fs::read(p).unwrap();
        *bytes.last_mut().unwrap() ^= 0x40;
        std::fs::write(p, bytes).unwrap();
    }
    // Before the check, this build shipped the flipped pycs (exit 0, and an
    // image whose `import pkg.main` failed).
    assert_eq!(build("oci:b"), first, "the bad pycs were not reused");
    for p in &pycs {
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(
            &Sha256::digest(&bytes[32..])[..],
            &bytes[..32],
            "{} was healed",
            p.display()
        );
    }
}

#[test]
fn a_source_over_64_mib_ships_without_a_pyc_and_memory_stays_flat() {
    let tmp = support::target_tempdir("bytecode-huge-");
    let dir = tmp.path();
    let base = support::base::base_image("amd64");
    std::fs::create_dir_all(dir.join("src/pkg")).unwrap();
    std::fs::write(dir.join("src/pkg/__init__.py"), "").unwrap();
    std::fs::write(dir.join("src/pkg/main.py"), "app = 1\n").unwrap();
    // One string literal: its pyc is as large as the source.
    let mut huge = b"blob = \"".to_vec();
    huge.resize(100 << 20, b'a');
    huge.extend_from_slice(b"\"\n");
    std::fs::write(dir.join("src/pkg/huge.py"), &huge).unwrap();
    drop(huge);
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\nsource = \"src\"\napp = \"pkg.main:app\"\nbytecode-stdlib = false\n",
            base.display()
        ),
    )
    .unwrap();
    // GNU time reports the peak RSS of imgbuild alone (setup.sh installs it).
    let peak = dir.join("peak");
    let built = support::imgbuild_command(
        dir,
        &["build", "--output", "oci:out", "--cache-dir", "cache"],
    );
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&peak)
        .arg(built.get_program())
        .args(built.get_args())
        .current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("/app/pkg/huge.py: not compiled: 100 MiB, over the 64 MiB"),
        "{stderr}"
    );
    let peak_mib = std::fs::read_to_string(&peak)
        .unwrap()
        .trim()
        .parse::<u64>()
        .unwrap()
        / 1024;
    eprintln!("peak RSS of the build: {peak_mib} MiB");
    // Compiling it held the source and its pyc: over 200 MiB.
    assert!(peak_mib < 128, "peak RSS {peak_mib} MiB");
    // The app layer: the one that holds the sources.
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir.join("out/blobs/sha256")).unwrap() {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(e.unwrap().path()).unwrap());
        let mut tar = tar::Archive::new(gz);
        let Ok(entries) = tar.entries() else { continue };
        let here: Vec<String> = entries
            .filter_map(|e| Some(e.ok()?.path().ok()?.to_string_lossy().into_owned()))
            .collect();
        if here.iter().any(|n| n.ends_with("pkg/huge.py")) {
            names = here;
        }
    }
    assert!(!names.is_empty(), "no layer holds huge.py");
    assert!(
        names.iter().any(|n| n.contains("main.cpython-311.pyc")),
        "{} entries",
        names.len()
    );
    assert!(!names.iter().any(|n| n.contains("huge.cpython")));
}
