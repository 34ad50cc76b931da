//! `imgbuild init` on projects with no settings: what it writes makes an image
//! that serves, with no edits. A flat FastAPI layout and a src-layout Starlette
//! project (settings in pyproject.toml), each locked by uv at test time.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;
use support::podman;

fn imgbuild(cwd: &Path, args: &[&str]) -> Output {
    support::imgbuild_command(cwd, args)
        .output()
        .expect("run imgbuild")
}

fn ok(o: Output, what: &str) -> (String, String) {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// `imgbuild init --base <Debian base>` then `imgbuild build` in `project`;
/// returns init's stderr and the image as an oci-archive reference.
fn init_and_build(project: &Path, extra: &[&str]) -> (String, String) {
    let base = support::base::base_image_ref("amd64");
    let mut args = vec!["init", "--base", &base];
    args.extend_from_slice(extra);
    let (_, report) = ok(imgbuild(project, &args), "imgbuild init");
    ok(
        imgbuild(
            project,
            &[
                "build",
                "--output",
                "oci-archive:image.tar",
                "--cache-dir",
                "cache",
            ],
        ),
        "imgbuild build",
    );
    let image = format!("oci-archive:{}", project.join("image.tar").display());
    (report, image)
}

#[test]
fn flat_fastapi_project_serves_after_init_and_build() {
    let project = support::uv::uv_lock(&support::fixture("init-flat"));
    let (report, image) = init_and_build(&project, &[]);
    // The service's own app, not the test double under tools/ nor the one in tests/.
    assert!(
        report.contains("app init_flat.api:api (FastAPI in init_flat/api.py:6); also found tools.fake_upstream:app"),
        "{report}"
    );
    assert!(report.contains("found    lockfile uv.lock"), "{report}");
    assert!(
        report.contains("found    health route GET /health (init_flat/api.py:9)"),
        "{report}"
    );
    assert!(!report.contains("missing"), "{report}");

    let c = podman::run_detached(&image, &[], 8000);
    let health = c.wait_ready("/health", Duration::from_secs(60));
    assert!(health.contains("ok"), "GET /health: {health}");
    let who = podman::http("GET", &c.url("/whoami"), None).unwrap();
    assert_eq!(who.status, 200, "{}", c.logs());
    assert!(
        who.body.contains("\"module\":\"init_flat.api\""),
        "{}",
        who.body
    );
}

#[test]
fn src_layout_starlette_project_serves_from_pyproject_settings() {
    let project = support::uv::uv_lock(&support::fixture("init-src"));
    let (report, image) = init_and_build(&project, &["--pyproject"]);
    assert!(
        report.contains("found    app init_src.app:app (Starlette in src/init_src/app.py:17)"),
        "{report}"
    );
    assert!(report.contains("app-dir = \"src\""), "{report}");
    assert!(
        report.contains("found    health route GET /healthz (src/init_src/app.py:19)"),
        "{report}"
    );
    assert!(
        report.contains("found    [project.scripts] init-src-migrate"),
        "{report}"
    );
    assert!(!project.join("imgbuild.toml").exists());
    let pyproject = std::fs::read_to_string(project.join("pyproject.toml")).unwrap();
    assert!(pyproject.contains("\n[tool.imgbuild]\n"), "{pyproject}");
    assert!(
        pyproject.contains("# init = [\"init-src-migrate\"]"),
        "{pyproject}"
    );

    let c = podman::run_detached(&image, &[], 8000);
    let health = c.wait_ready("/healthz", Duration::from_secs(60));
    assert_eq!(health, "ok");
    let hello = podman::http("GET", &c.url("/hello/imgbuild"), None).unwrap();
    assert_eq!(hello.status, 200, "{}", c.logs());
    assert_eq!(
        hello.body,
        "{\"hello\":\"imgbuild\",\"module\":\"init_src.app\"}",
        "{}",
        c.logs()
    );
}

#[test]
fn init_keeps_existing_settings_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("main.py"), "app = FastAPI()\n").unwrap();
    std::fs::write(tmp.path().join("imgbuild.toml"), "# hand-written\n").unwrap();
    let o = imgbuild(tmp.path(), &["init", "--base", "python:3.12-slim"]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "error: imgbuild.toml exists; pass --force to replace it\n"
    );
    assert!(o.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("imgbuild.toml")).unwrap(),
        "# hand-written\n"
    );
    let (stdout, _) = ok(
        imgbuild(
            tmp.path(),
            &["init", "--base", "python:3.12-slim", "--force"],
        ),
        "imgbuild init --force",
    );
    assert_eq!(stdout, "imgbuild.toml\n");
    let written = std::fs::read_to_string(tmp.path().join("imgbuild.toml")).unwrap();
    assert!(
        written.contains("\nbase = \"python:3.12-slim\"\napp = \"main:app\"\n"),
        "{written}"
    );
}
