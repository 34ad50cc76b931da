//! Wheel compatibility tags for the target Python, in the priority order of
//! `packaging.tags` (and uv's `uv-platform-tags`), and wheel file names.
//!
//! `linux_<arch>` is never accepted: those wheels were built for one machine
//! and carry no promise about the image's libraries.

use super::interpreter::{Libc, PythonInfo};
use pep508_rs::{InvalidNameError, PackageName};
use std::collections::HashMap;
use std::str::FromStr;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TagError {
    #[error("`{filename}` is not a valid wheel file name ({reason}); expected name-version(-build)?-python-abi-platform.whl")]
    InvalidWheelFilename {
        filename: String,
        reason: &'static str,
    },
    #[error(
        "`{filename}` is not a valid wheel file name: its name part is not a valid package name"
    )]
    InvalidWheelName {
        filename: String,
        #[source]
        source: InvalidNameError,
    },
}

/// One `python-abi-platform` triple.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    pub python: String,
    pub abi: String,
    pub platform: String,
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.python, self.abi, self.platform)
    }
}

/// The tags the target accepts, best first.
#[derive(Clone, Debug)]
pub struct Tags {
    /// Each tag's place in the order, best first (lower is better).
    rank: HashMap<(String, String, String), usize>,
}

impl Tags {
    pub fn for_target(info: &PythonInfo) -> Tags {
        let (major, minor) = (info.version.0, info.version.1);
        let platforms = platforms(&info.arch, info.libc);
        let mut ordered = Vec::new();
        let mut push = |python: String, abi: &str, plats: &[String]| {
            for p in plats {
                ordered.push(Tag {
                    python: python.clone(),
                    abi: abi.to_owned(),
                    platform: p.clone(),
                });
            }
        };
        let cp = format!("cp{major}{minor}");
        let any = ["any".to_owned()];

        // CPython-specific wheels: the exact ABI, the stable ABI, no ABI.
        push(cp.clone(), &info.abi_tag, &platforms);
        let stable = stable_abi(major, minor, info.free_threaded);
        if let Some((abi, _)) = stable {
            push(cp.clone(), abi, &platforms);
        }
        push(cp.clone(), "none", &platforms);
        if let Some((abi, lowest)) = stable {
            for m in (lowest..minor).rev() {
                push(format!("cp{major}{m}"), abi, &platforms);
            }
        }
        // Generic wheels for this platform, then pure wheels.
        let generic = py_interpreter_range(major, minor);
        for py in &generic {
            push(py.clone(), "none", &platforms);
        }
        push(cp, "none", &any);
        for py in &generic {
            push(py.clone(), "none", &any);
        }

        let mut rank = HashMap::with_capacity(ordered.len());
        for (i, t) in ordered.iter().enumerate() {
            rank.entry((t.python.clone(), t.abi.clone(), t.platform.clone()))
                .or_insert(i);
        }
        Tags { rank }
    }

    /// The index of the wheel's best tag: lower is better; None when the
    /// target cannot use the wheel.
    pub fn priority(&self, wheel: &WheelFilename) -> Option<usize> {
        let mut best: Option<usize> = None;
        for py in &wheel.python_tags {
            for abi in &wheel.abi_tags {
                for plat in &wheel.platform_tags {
                    if let Some(&i) = self.rank.get(&(py.clone(), abi.clone(), plat.clone())) {
                        best = Some(best.map_or(i, |b| b.min(i)));
                    }
                }
            }
        }
        best
    }

    /// Whether a wheel built for the target itself (from an sdist, in the
    /// base) fits: by its tags, or with the plain `linux_<arch>` platform a
    /// local build gets, for a Python and ABI the target takes on that arch.
    pub fn fits_local_build(&self, wheel: &WheelFilename) -> bool {
        if self.priority(wheel).is_some() {
            return true;
        }
        let arches: Vec<&str> = wheel
            .platform_tags
            .iter()
            .filter_map(|p| p.strip_prefix("linux_"))
            .collect();
        self.rank.keys().any(|(py, abi, plat)| {
            wheel.python_tags.contains(py)
                && wheel.abi_tags.contains(abi)
                && arches.iter().any(|a| plat.ends_with(&format!("_{a}")))
        })
    }

    /// The tags, best first.
    #[cfg(test)]
    fn iter(&self) -> std::vec::IntoIter<Tag> {
        let mut ranked: Vec<_> = self.rank.iter().collect();
        ranked.sort_by_key(|(_, i)| **i);
        let tags: Vec<Tag> = ranked
            .into_iter()
            .map(|((python, abi, platform), _)| Tag {
                python: python.clone(),
                abi: abi.clone(),
                platform: platform.clone(),
            })
            .collect();
        tags.into_iter()
    }
}

/// The stable ABI's name and the lowest minor version that has it.
/// Free-threaded builds cannot load abi3 extensions; `abi3t` starts at 3.15 (PEP 803).
fn stable_abi(major: u32, minor: u32, free_threaded: bool) -> Option<(&'static str, u32)> {
    match (major, free_threaded) {
        (3, false) => Some(("abi3", 2)),
        (3, true) if minor >= 15 => Some(("abi3t", 15)),
        _ => None,
    }
}

/// `py312, py3, py311, …, py30`.
fn py_interpreter_range(major: u32, minor: u32) -> Vec<String> {
    let mut out = vec![format!("py{major}{minor}"), format!("py{major}")];
    out.extend((0..minor).rev().map(|m| format!("py{major}{m}")));
    out
}

/// Platform tags, newest first: manylinux_2_M down to the arch's oldest with
/// the legacy aliases right after their equivalents, or musllinux_1_N down to 1_0.
fn platforms(arch: &str, libc: Libc) -> Vec<String> {
    let mut out = Vec::new();
    match libc {
        Libc::Glibc { major: 2, minor } => {
            let lowest = match arch {
                "x86_64" | "i686" => 5,
                "riscv64" => 31,
                "loongarch64" => 36,
                _ => 17,
            };
            for m in (lowest..=minor).rev() {
                out.push(format!("manylinux_2_{m}_{arch}"));
                let legacy = match m {
                    17 => Some("manylinux2014"),
                    12 => Some("manylinux2010"),
                    5 => Some("manylinux1"),
                    _ => None,
                };
                // The legacy aliases exist only for the architectures they covered.
                let covered = match m {
                    17 => matches!(
                        arch,
                        "x86_64" | "i686" | "aarch64" | "armv7l" | "ppc64le" | "s390x" | "ppc64"
                    ),
                    _ => matches!(arch, "x86_64" | "i686"),
                };
                if let Some(l) = legacy.filter(|_| covered) {
                    out.push(format!("{l}_{arch}"));
                }
            }
        }
        Libc::Glibc { .. } => {}
        Libc::Musl { major, minor } => {
            for m in (0..=minor).rev() {
                out.push(format!("musllinux_{major}_{m}_{arch}"));
            }
        }
    }
    out
}

/// A parsed wheel file name with its compressed tag sets expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WheelFilename {
    /// The distribution name, normalised (PEP 503): `Foo_Bar` becomes `foo-bar`.
    pub name: PackageName,
    pub version: String,
    /// `(number, rest)` of the optional build tag, which breaks ties (higher wins).
    pub build: Option<(u64, String)>,
    pub python_tags: Vec<String>,
    pub abi_tags: Vec<String>,
    pub platform_tags: Vec<String>,
}

impl WheelFilename {
    pub fn parse(filename: &str) -> Result<WheelFilename, TagError> {
        let bad = |reason| TagError::InvalidWheelFilename {
            filename: filename.to_owned(),
            reason,
        };
        let stem = filename
            .strip_suffix(".whl")
            .ok_or_else(|| bad("no .whl suffix"))?;
        let parts: Vec<&str> = stem.split('-').collect();
        let (name, version, build, py, abi, plat) = match parts.as_slice() {
            [n, v, p, a, pl] => (*n, *v, None, *p, *a, *pl),
            [n, v, b, p, a, pl] => (*n, *v, Some(*b), *p, *a, *pl),
            _ => return Err(bad("wrong number of dash-separated parts")),
        };
        if [name, version, py, abi, plat].iter().any(|s| s.is_empty()) {
            return Err(bad("an empty part"));
        }
        let build = match build {
            None => None,
            Some(b) => {
                let digits: String = b.chars().take_while(char::is_ascii_digit).collect();
                let number = digits
                    .parse()
                    .map_err(|_| bad("the build tag must start with a digit"))?;
                Some((number, b[digits.len()..].to_owned()))
            }
        };
        let split = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
        let name = PackageName::from_str(name).map_err(|source| TagError::InvalidWheelName {
            filename: filename.to_owned(),
            source,
        })?;
        Ok(WheelFilename {
            name,
            version: version.to_owned(),
            build,
            python_tags: split(py),
            abi_tags: split(abi),
            platform_tags: split(plat),
        })
    }

    /// Every tag the file name claims, `py-abi-plat`, for messages.
    pub fn tag_string(&self) -> String {
        format!(
            "{}-{}-{}",
            self.python_tags.join("."),
            self.abi_tags.join("."),
            self.platform_tags.join(".")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(minor: u32, libc: Libc, arch: &str) -> PythonInfo {
        PythonInfo {
            interpreter: format!("/usr/local/bin/python3.{minor}"),
            version: (3, minor, 1),
            abi_tag: format!("cp3{minor}"),
            soabi: format!("cpython-3{minor}-{arch}-linux-gnu"),
            free_threaded: false,
            libc,
            arch: arch.into(),
            prefix: "/usr/local".into(),
            externally_managed: false,
        }
    }

    const GLIBC_236: Libc = Libc::Glibc {
        major: 2,
        minor: 36,
    };

    fn prio(tags: &Tags, file: &str) -> Option<usize> {
        tags.priority(&WheelFilename::parse(file).unwrap())
    }

    /// `file` is not installable under `tags`.
    fn assert_refused(tags: &Tags, file: &str) {
        assert_eq!(prio(tags, file), None, "{file}");
    }

    #[test]
    fn a_wheel_built_in_the_base_fits_with_its_plain_linux_tag_on_the_same_arch_only() {
        let tags = Tags::for_target(&target(11, GLIBC_236, "x86_64"));
        let fits = |f: &str| tags.fits_local_build(&WheelFilename::parse(f).unwrap());
        assert!(fits("cext-1.0-cp311-cp311-linux_x86_64.whl"));
        assert!(fits("pure-1.0-py3-none-any.whl"));
        assert!(!fits("cext-1.0-cp311-cp311-linux_aarch64.whl"));
        assert!(!fits("cext-1.0-cp312-cp312-linux_x86_64.whl"));
        assert_refused(&tags, "cext-1.0-cp311-cp311-linux_x86_64.whl");
    }

    #[test]
    fn best_tag_is_the_exact_abi_on_the_newest_manylinux() {
        let tags = Tags::for_target(&target(11, GLIBC_236, "x86_64"));
        assert_eq!(
            tags.iter().next().unwrap().to_string(),
            "cp311-cp311-manylinux_2_36_x86_64"
        );
    }

    #[test]
    fn order_matches_packaging_without_linux_tags() {
        // packaging 26 for 3.12 / glibc 2.36 / x86_64 lists 987 tags, 36 platforms
        // including linux_x86_64; without it there are 35 per group.
        let tags = Tags::for_target(&target(12, GLIBC_236, "x86_64"));
        let t: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        assert_eq!(t[19], "cp312-cp312-manylinux_2_17_x86_64");
        assert_eq!(t[20], "cp312-cp312-manylinux2014_x86_64");
        assert_eq!(t[35], "cp312-abi3-manylinux_2_36_x86_64");
        assert_eq!(t[35 * 4 + 19], "cp310-abi3-manylinux_2_17_x86_64");
        assert_eq!(t.len(), 987 - 27);
        assert_eq!(t[t.len() - 15], "cp312-none-any");
        assert_eq!(t[t.len() - 13], "py3-none-any");
        assert!(t
            .iter()
            .all(|s| !s.contains("linux_x86_64") || s.contains("manylinux")));
    }

    #[test]
    fn abi3_and_pure_wheels_are_accepted_in_order() {
        let tags = Tags::for_target(&target(12, GLIBC_236, "x86_64"));
        let exact = prio(
            &tags,
            "uvloop-0.23.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        )
        .unwrap();
        let abi3 = prio(
            &tags,
            "watchfiles-1.3.0-cp310-abi3-manylinux_2_17_x86_64.whl",
        )
        .unwrap();
        let pure = prio(&tags, "fastapi-0.165.0-py3-none-any.whl").unwrap();
        assert!(exact < abi3 && abi3 < pure);
        assert_refused(&tags, "x-1.0-cp313-abi3-manylinux_2_17_x86_64.whl");
        assert_refused(&tags, "x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl");
    }

    #[test]
    fn a_musllinux_wheel_is_refused_on_glibc_and_linux_tags_everywhere() {
        let tags = Tags::for_target(&target(11, GLIBC_236, "x86_64"));
        assert_refused(&tags, "x-1.0-cp311-cp311-musllinux_1_2_x86_64.whl");
        assert_refused(&tags, "x-1.0-cp311-cp311-linux_x86_64.whl");
        assert_refused(&tags, "x-1.0-cp311-cp311-manylinux_2_38_x86_64.whl");
        let musl = Tags::for_target(&target(11, Libc::Musl { major: 1, minor: 2 }, "x86_64"));
        assert!(prio(&musl, "x-1.0-cp311-cp311-musllinux_1_1_x86_64.whl").is_some());
        assert_refused(&musl, "x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl");
    }

    #[test]
    fn aarch64_stops_at_manylinux_2_17() {
        let tags = Tags::for_target(&target(11, GLIBC_236, "aarch64"));
        let plats: Vec<String> = tags
            .iter()
            .filter(|t| t.abi == "cp311")
            .map(|t| t.platform)
            .collect();
        assert_eq!(plats.last().unwrap(), "manylinux2014_aarch64");
        assert_eq!(plats[plats.len() - 2], "manylinux_2_17_aarch64");
        assert_refused(&tags, "x-1.0-cp311-cp311-manylinux_2_12_aarch64.whl");
        assert_refused(&tags, "x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl");
    }

    #[test]
    fn free_threaded_builds_skip_abi3() {
        let mut info = target(13, GLIBC_236, "x86_64");
        info.free_threaded = true;
        info.abi_tag = "cp313t".into();
        let tags = Tags::for_target(&info);
        assert_eq!(
            prio(&tags, "x-1.0-cp313-cp313t-manylinux_2_17_x86_64.whl"),
            Some(19)
        );
        assert_refused(&tags, "x-1.0-cp313-cp313-manylinux_2_17_x86_64.whl");
        assert_refused(&tags, "x-1.0-cp310-abi3-manylinux_2_17_x86_64.whl");
        assert!(prio(&tags, "x-1.0-py3-none-any.whl").is_some());
    }

    #[test]
    fn wheel_filenames_parse_build_tags_and_compressed_sets() {
        let w = WheelFilename::parse("six-1.17.0-1b-py2.py3-none-any.whl").unwrap();
        assert_eq!(w.name.as_ref(), "six");
        let foo = WheelFilename::parse("Foo_Bar-1.0-py3-none-any.whl").unwrap();
        assert_eq!(foo.name.as_ref(), "foo-bar");
        assert!(WheelFilename::parse("_foo-1.0-py3-none-any.whl").is_err());
        assert_eq!(w.version, "1.17.0");
        assert_eq!(w.build, Some((1, "b".into())));
        assert_eq!(w.python_tags, vec!["py2", "py3"]);
        assert_eq!(w.tag_string(), "py2.py3-none-any");
        assert!(WheelFilename::parse("six-1.17.0.tar.gz").is_err());
        assert!(WheelFilename::parse("six-1.17.0-any.whl").is_err());
        assert!(WheelFilename::parse("six-1.17.0-x-py3-none-any.whl").is_err());
    }
}
