//! One wheel per locked package: the file whose tags rank best for the target,
//! else the package's locked sdist, to be built into a wheel in the sandbox
//! (`crate::sdist`). A package with neither stops the build; all such
//! packages are reported together.

use super::LockedPackage;
use crate::python::tags::{Tags, WheelFilename};
use thiserror::Error;

/// Higher build tags sort first.
type BuildRank = std::cmp::Reverse<(u64, String)>;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelectedWheel {
    pub name: String,
    pub version: String,
    pub filename: String,
    pub url: Option<String>,
    pub sha256: String,
    pub size: Option<u64>,
    /// Where to look the file up when `url` is None (see `LockedPackage::index`).
    pub index: Option<String>,
    /// The file is the package's sdist, to be built into a wheel before it is
    /// installed (no wheel fits the target).
    pub from_sdist: bool,
}

/// How many of a package's wheel tags, and how many packages, the
/// "no usable wheel" message lists before it counts the rest.
const MAX_TAGS_SHOWN: usize = 6;
const MAX_PROBLEMS_SHOWN: usize = 12;

#[derive(Debug, Error)]
pub enum SelectError {
    #[error("no usable wheel for {platform}:\n{}\nPick versions that publish wheels for this platform (or add the platform to uv's required-environments and lock again), or use a base image whose Python and libc match the wheels", .problems.join("\n"))]
    NoWheel {
        platform: String,
        /// One line per package, e.g. `  - foo 1.0: only an sdist`.
        problems: Vec<String>,
    },
}

/// `platform_label` names the target in the message, e.g.
/// `linux/arm64 (CPython 3.11, glibc 2.36)`.
pub fn select_wheels(
    packages: &[LockedPackage],
    tags: &Tags,
    platform_label: &str,
) -> Result<Vec<SelectedWheel>, SelectError> {
    let mut selected = Vec::new();
    let mut problems = Vec::new();
    for pkg in packages {
        let mut best: Option<(usize, BuildRank, &super::LockedFile)> = None;
        let mut offered: Vec<String> = Vec::new();
        for file in &pkg.files {
            let Ok(wheel) = WheelFilename::parse(&file.filename) else {
                continue;
            };
            if wheel.name.as_ref() != pkg.name {
                continue;
            }
            offered.push(wheel.tag_string());
            let Some(priority) = tags.priority(&wheel) else {
                continue;
            };
            // Lower priority wins; among equals, the higher build tag, then the file name.
            let build = std::cmp::Reverse(wheel.build.clone().unwrap_or_default());
            let better = match &best {
                None => true,
                Some((p, b, f)) => (priority, &build, &file.filename) < (*p, b, &f.filename),
            };
            if better {
                best = Some((priority, build, file));
            }
        }
        match best {
            Some((_, _, file)) => selected.push(SelectedWheel {
                name: pkg.name.clone(),
                version: pkg.version.clone(),
                filename: file.filename.clone(),
                url: file.url.clone(),
                sha256: file.sha256.clone(),
                size: file.size,
                index: pkg.index.clone(),
                from_sdist: false,
            }),
            // issue 22: built from the locked sdist, as pip and uv would.
            None if pkg.sdist.is_some() => {
                let sdist = pkg.sdist.as_ref().expect("checked");
                selected.push(SelectedWheel {
                    name: pkg.name.clone(),
                    version: pkg.version.clone(),
                    filename: sdist.filename.clone(),
                    url: sdist.url.clone(),
                    sha256: sdist.sha256.clone(),
                    size: sdist.size,
                    index: pkg.index.clone(),
                    from_sdist: true,
                });
            }
            None if offered.is_empty() && pkg.has_sdist => {
                // issue 8: each line says what to do about its package.
                problems.push(format!(
                    "  - {} {}: only a source imgbuild cannot build (a git source, or an sdist without a sha256); build a wheel (`uv build --wheel`) and point a path source at it (uv: `[tool.uv.sources] {} = {{ path = \"wheels/….whl\" }}`)",
                    pkg.name, pkg.version, pkg.name
                ));
            }
            None if offered.is_empty() => {
                problems.push(format!(
                    "  - {} {}: the lock lists no files",
                    pkg.name, pkg.version
                ));
            }
            None => {
                offered.sort();
                offered.dedup();
                // A package may publish dozens of wheels: a few name the kind.
                problems.push(format!(
                    "  - {} {}: no wheel for {platform_label}: has {}",
                    pkg.name,
                    pkg.version,
                    summarised(&offered, MAX_TAGS_SHOWN)
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(selected);
    }
    let more = problems.len().saturating_sub(MAX_PROBLEMS_SHOWN);
    problems.truncate(MAX_PROBLEMS_SHOWN);
    if more > 0 {
        problems.push(format!("  - … and {more} more packages like these"));
    }
    Err(SelectError::NoWheel {
        platform: platform_label.to_owned(),
        problems,
    })
}

/// The first `keep` items and how many more: a package with wheels for
/// dozens of platforms once made this error a 12,848-byte line.
fn summarised(items: &[String], keep: usize) -> String {
    match items.len().checked_sub(keep) {
        Some(more) if more > 0 => format!("{} and {more} more", items[..keep].join(", ")),
        _ => items.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::test_support::{error_of, hash};
    use crate::lock::LockedFile;
    use crate::python::markers::test_python;

    fn package(name: &str, files: &[&str], has_sdist: bool) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: "1.0".into(),
            files: files
                .iter()
                .enumerate()
                .map(|(i, f)| LockedFile {
                    filename: f.to_string(),
                    url: Some(format!("https://files.example/{f}")),
                    sha256: hash(char::from(b'a' + i as u8)),
                    size: Some(10),
                })
                .collect(),
            has_sdist,
            sdist: has_sdist.then(|| LockedFile {
                filename: format!("{name}-1.0.tar.gz"),
                url: Some(format!("https://files.example/{name}-1.0.tar.gz")),
                sha256: hash('s'),
                size: Some(10),
            }),
            index: None,
        }
    }

    fn tags() -> Tags {
        Tags::for_target(&test_python("x86_64"))
    }

    #[test]
    fn the_best_ranked_wheel_wins() {
        let pkgs = [package(
            "uvloop",
            &[
                "uvloop-1.0-py3-none-any.whl",
                "uvloop-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                "uvloop-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                "uvloop-1.0-cp311-cp311-musllinux_1_2_x86_64.whl",
                "uvloop-1.0-cp311-cp311-manylinux_2_28_aarch64.whl",
            ],
            true,
        )];
        let got = select_wheels(&pkgs, &tags(), "linux/amd64").unwrap();
        assert_eq!(
            got[0].filename,
            "uvloop-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
        );
        assert_eq!(got[0].sha256, hash('c'));
    }

    #[test]
    fn a_higher_build_tag_breaks_ties() {
        let pkgs = [package(
            "x",
            &["x-1.0-1-py3-none-any.whl", "x-1.0-2-py3-none-any.whl"],
            false,
        )];
        let got = select_wheels(&pkgs, &tags(), "linux/amd64").unwrap();
        assert_eq!(got[0].filename, "x-1.0-2-py3-none-any.whl");
    }

    #[test]
    fn every_package_without_a_wheel_is_listed_in_one_error() {
        let pkgs = [
            package("fine", &["fine-1.0-py3-none-any.whl"], false),
            package("srconly", &[], true),
            package(
                "winonly",
                &[
                    "winonly-1.0-cp311-cp311-win_amd64.whl",
                    "winonly-1.0-cp311-cp311-linux_x86_64.whl",
                ],
                true,
            ),
        ];
        let mut pkgs = pkgs.to_vec();
        pkgs[1].sdist = None;
        pkgs[2].sdist = None;
        let err = error_of(select_wheels(&pkgs, &tags(), "linux/amd64 (CPython 3.11)"));
        assert!(
            err.contains("srconly 1.0: only a source imgbuild cannot build"),
            "{err}"
        );
        assert!(
            err.contains("winonly 1.0: no wheel for linux/amd64 (CPython 3.11): has cp311-cp311-linux_x86_64, cp311-cp311-win_amd64"),
            "{err}"
        );
        assert!(!err.contains("fine"), "{err}");
        assert!(err.contains("Pick versions that publish wheels"), "{err}");
    }

    #[test]
    fn a_long_list_of_wheels_or_packages_is_cut_with_a_count() {
        let windows: Vec<String> = (0..40)
            .map(|i| format!("big-1.0-cp311-cp311-macosx_{}_0_arm64.whl", 10 + i))
            .collect();
        let files: Vec<&str> = windows.iter().map(String::as_str).collect();
        let mut pkgs = vec![package("big", &files, false)];
        for i in 0..20 {
            let name = format!("w{i:02}");
            let wheel = format!("{name}-1.0-cp311-cp311-win_amd64.whl");
            pkgs.push(package(&name, &[wheel.as_str()], false));
        }
        for p in &mut pkgs {
            p.sdist = None;
        }
        let err = error_of(select_wheels(&pkgs, &tags(), "linux/amd64"));
        assert!(
            err.contains("cp311-cp311-macosx_15_0_arm64 and 34 more\n"),
            "{err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with("  - ")).count(),
            13,
            "{err}"
        );
        assert!(
            err.contains("  - … and 9 more packages like these"),
            "{err}"
        );
        assert!(err.len() < 2000, "{} bytes: {err}", err.len());
    }

    #[test]
    fn a_package_without_a_fitting_wheel_is_built_from_its_locked_sdist() {
        let pkgs = [
            package("fine", &["fine-1.0-py3-none-any.whl"], true),
            package("srconly", &[], true),
            package("winonly", &["winonly-1.0-cp311-cp311-win_amd64.whl"], true),
        ];
        let got = select_wheels(&pkgs, &tags(), "linux/amd64").unwrap();
        let built: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|w| (w.name.as_str(), w.filename.as_str(), w.from_sdist))
            .collect();
        assert_eq!(
            built,
            [
                ("fine", "fine-1.0-py3-none-any.whl", false),
                ("srconly", "srconly-1.0.tar.gz", true),
                ("winonly", "winonly-1.0.tar.gz", true),
            ]
        );
        assert_eq!(got[1].sha256, hash('s'));
    }

    #[test]
    fn a_long_list_of_offered_tags_is_summarised() {
        let files: Vec<String> = (0..40)
            .map(|i| format!("many-1.0-cp3{i}-cp3{i}-win_amd64.whl"))
            .collect();
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        let mut pkg = package("many", &names, false);
        pkg.sdist = None;
        let err = error_of(select_wheels(&[pkg], &tags(), "linux/amd64"));
        let line = err.lines().find(|l| l.contains("many 1.0")).unwrap();
        assert!(line.ends_with("and 34 more"), "{line}");
        assert!(line.len() < 300, "{line}");
    }
}
