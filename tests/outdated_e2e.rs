//! `imgbuild outdated` (issue 25): an image built on a base tag says whether
//! that tag has moved since, against a real registry (Debian's docker-registry).

mod support;

use std::path::Path;
use support::registry::{Registry, Setup};
use support::Run;

fn imgbuild(cwd: &Path, args: &[&str]) -> Run {
    support::run_isolated(cwd, args)
}

/// `oci:DIR:latest` for a layout.
fn oci(layout: &Path) -> String {
    format!("oci:{}:latest", layout.display())
}

#[test]
fn outdated_says_current_until_the_base_tag_moves_then_names_both_digests_and_exits_1() {
    let reg = Registry::start(Setup::Plain);
    let base_a = support::base::base_image("amd64");
    let base_b = support::base::base_image_with("amd64", &["libstdc++6"]);
    reg.copy_in(&oci(&base_a), "python:3.11");
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
    let a = support::layout::top_digest(&base_a);
    assert!(
        current.stderr.contains(&format!(
            "[linux/amd64]: base {}/python:3.11 is current ({a})",
            reg.host
        )),
        "{}",
        current.stderr
    );

    reg.copy_in(&oci(&base_b), "python:3.11");
    let b = support::layout::top_digest(&base_b);
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
