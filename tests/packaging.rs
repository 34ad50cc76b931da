//! The pyproject.toml at the repository root packages the imgbuild binary as a
//! wheel (scripts/wheel.sh builds and tries it); it must stay a packaging file
//! only, and never be read as the settings of an image.

mod support;

use std::process::Command;

fn root_pyproject() -> toml::Table {
    let text = std::fs::read_to_string(support::repo_root().join("pyproject.toml")).unwrap();
    text.parse().unwrap()
}

#[test]
fn the_root_pyproject_builds_a_bin_wheel_versioned_by_cargo() {
    let doc = root_pyproject();
    assert_eq!(
        doc["build-system"]["build-backend"].as_str(),
        Some("maturin")
    );
    let maturin = doc["tool"]["maturin"].as_table().unwrap();
    assert_eq!(maturin["bindings"].as_str(), Some("bin"));
    assert_eq!(maturin["strip"].as_bool(), Some(true));
    let project = doc["project"].as_table().unwrap();
    assert_eq!(project["name"].as_str(), Some("imgbuild"));
    assert!(
        !project.contains_key("version")
            && project["dynamic"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v.as_str() == Some("version")),
        "the version must come from Cargo.toml only"
    );
}

#[test]
fn the_root_pyproject_is_not_taken_for_image_settings() {
    let doc = root_pyproject();
    assert!(
        !doc["tool"].as_table().unwrap().contains_key("imgbuild"),
        "a [tool.imgbuild] table here would make the repository root an image spec"
    );
    let root = support::repo_root();
    let e = imgbuild::spec::load(None, &root).unwrap_err().to_string();
    assert!(e.starts_with("no imgbuild.toml in "), "{e}");

    // And the binary, run at the root, says so and writes nothing.
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let o = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .current_dir(&root)
        .args(["build", "--output"])
        .arg(format!("oci:{}", layout.display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.starts_with("error: no imgbuild.toml in "),
        "{stderr}"
    );
    assert!(!layout.exists());
}
