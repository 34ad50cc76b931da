//! `imgbuild outdated` (issue 25): an image built on a base tag says whether
//! that tag has moved since, against a real registry (Debian's docker-registry).

mod support;

use std::path::Path;
use std::process::Command;
use support::registry::{Registry, Setup};
use support::Run;

fn imgbuild(cwd: &Path, args: &[&str]) -> Run {
    Run::from(
        support::without_credentials(cwd, args)
            .output()
            .expect("cannot run imgbuild"),
    )
}

/// Copies an OCI layout to `reg` as `name`, keeping its digests.
fn copy_base(reg: &Registry, layout: &Path, name: &str) {
    let mut args = vec![
        "--insecure-policy".to_string(),
        "copy".into(),
        "--quiet".into(),
        "--preserve-digests".into(),
    ];
    args.extend(reg.skopeo_flags("dest-"));
    args.push(format!("oci:{}:latest", layout.display()));
    args.push(format!("docker://{}/{name}", reg.host));
    support::run_ok(Command::new("skopeo").args(&args));
}

/// The digest of the one manifest in an OCI layout's index.
fn layout_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn outdated_says_current_until_the_base_tag_moves_then_names_both_digests_and_exits_1() {
    let reg = Registry::start(Setup::Plain);
    let base_a = support::base::base_image("amd64");
    let base_b = support::base::base_image_with("amd64", &["libstdc++6"]);
    copy_base(&reg, &base_a, "python:3.11");
    let dir = support::target_tempdir("outdated-");
    let project = support::fixture_without_dependencies("hello-api", &dir.path().join("app"));
    std::fs::write(
        project.join("imgbuild.toml"),
        format!(
            "base = \"{}/python:3.11\"\napp = \"hello_api.main:app\"\n",
            reg.host
        ),
    )
    .unwrap();
    let image = format!("{}/app:1", reg.host);
    imgbuild(
        &project,
        &["push", "--tag", &image, "--cache-dir", "../cache"],
    )
    .must_succeed("push");

    let current = imgbuild(&project, &["outdated", &image]).must_succeed("outdated");
    let a = layout_digest(&base_a);
    assert!(
        current.stderr.contains(&format!(
            "[linux/amd64]: base {}/python:3.11 is current ({a})",
            reg.host
        )),
        "{}",
        current.stderr
    );

    copy_base(&reg, &base_b, "python:3.11");
    let b = layout_digest(&base_b);
    let moved = imgbuild(&project, &["outdated", &image]);
    assert!(!moved.success, "a moved base must fail the check");
    assert!(
        moved
            .stderr
            .contains(&format!("moved: built on {a}, now {b}")),
        "{}",
        moved.stderr
    );
    let last = moved.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("error: the base of {image} moved")),
        "{}",
        moved.stderr
    );

    let json = imgbuild(&project, &["outdated", "--json", &image]);
    assert!(!json.success);
    let report: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    let platform = &report["platforms"][0];
    assert_eq!(platform["status"], "moved");
    assert_eq!(platform["recorded"], a.as_str());
    assert_eq!(platform["now"], b.as_str());
    assert_eq!(platform["platform"], "linux/amd64");
}
