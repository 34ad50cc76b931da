//! The build requirements of an sdist, pinned: for each requirement, the
//! newest version on the index with a wheel for the target that was uploaded
//! no later than the cutoff, not yanked, and allowed by its requires-python;
//! then that wheel's own dependencies, the same way. No backtracking: a
//! build environment is a handful of pure-Python packages, and a conflict
//! is reported, not searched around.

use crate::lock::{IndexFile, SimpleIndex};
use crate::python::markers::MarkerEnv;
use crate::python::tags::{Tags, WheelFilename};
use pep508_rs::pep440_rs::Version;
use pep508_rs::{ExtraName, Requirement, VerbatimUrl, VersionOrUrl};
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Build environments are small; a runaway dependency chain is an error.
const MAX_PINS: usize = 64;

/// One package of a build environment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    pub name: String,
    pub version: String,
    pub filename: String,
    pub url: String,
    pub sha256: String,
    pub upload_time: Option<String>,
}

/// Where the pins come from and what they must fit.
pub struct Resolver<'a> {
    pub index: &'a dyn SimpleIndex,
    pub indexes: &'a [String],
    pub env: &'a MarkerEnv,
    pub tags: &'a Tags,
    /// RFC 3339; files uploaded after it are not considered.
    pub cutoff: Option<&'a str>,
    /// Downloads (or finds in the store) a pinned wheel, checked.
    pub fetch: &'a dyn Fn(&Pin) -> Result<PathBuf, String>,
}

impl Resolver<'_> {
    /// Adds to `pins` what `requirements` need; returns the wheel of each new pin.
    pub fn resolve(
        &self,
        requirements: &[String],
        pins: &mut BTreeMap<String, (Pin, PathBuf)>,
    ) -> Result<(), String> {
        let mut queue: VecDeque<(String, Vec<String>)> = requirements
            .iter()
            .map(|r| (r.clone(), Vec::new()))
            .collect();
        while let Some((text, extras)) = queue.pop_front() {
            let Some(req) = self.parse(&text, &extras)? else {
                continue;
            };
            let name = req.name.to_string();
            if let Some((pin, _)) = pins.get(&name) {
                if !allows(&req, &pin.version) {
                    return Err(format!(
                        "the build requirement `{text}` conflicts with {name} {} pinned for another requirement",
                        pin.version
                    ));
                }
            } else {
                if pins.len() >= MAX_PINS {
                    return Err(format!(
                        "the build requirements need over {MAX_PINS} packages"
                    ));
                }
                let pin = self.pick(&req, &text)?;
                let wheel = (self.fetch)(&pin)?;
                for dep in requires_dist(&wheel).map_err(|e| format!("{}: {e}", pin.filename))? {
                    queue.push_back((dep, Vec::new()));
                }
                pins.insert(name.clone(), (pin, wheel));
            }
            // The extras asked for bring their own requirements.
            if !req.extras.is_empty() {
                let wheel = pins[&name].1.clone();
                let wanted: Vec<String> = req.extras.iter().map(|e| e.to_string()).collect();
                for dep in requires_dist(&wheel)? {
                    if dep.contains("extra") {
                        queue.push_back((dep, wanted.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    /// The requirement, or None when its marker leaves the target out.
    fn parse(
        &self,
        text: &str,
        extras: &[String],
    ) -> Result<Option<Requirement<VerbatimUrl>>, String> {
        // pep508_rs 0.9 panics on some non-ASCII input after a marker.
        if !text.is_ascii() {
            return Err(format!("the build requirement `{text}` is not ASCII"));
        }
        let req = Requirement::<VerbatimUrl>::from_str(text)
            .map_err(|e| format!("the build requirement `{text}` is not valid PEP 508: {e}"))?;
        let extras: Vec<ExtraName> = extras
            .iter()
            .filter_map(|e| ExtraName::from_str(e).ok())
            .collect();
        if !req.evaluate_markers(self.env.environment(), &extras) {
            return Ok(None);
        }
        if let Some(VersionOrUrl::Url(_)) = &req.version_or_url {
            return Err(format!(
                "the build requirement `{text}` is a URL; imgbuild takes build requirements from the package index only"
            ));
        }
        Ok(Some(req))
    }

    /// The newest allowed version's best wheel, from the first index that has one.
    fn pick(&self, req: &Requirement<VerbatimUrl>, text: &str) -> Result<Pin, String> {
        if self.indexes.is_empty() {
            return Err(format!(
                "no package index is configured to take the build requirement `{text}` from; set UV_DEFAULT_INDEX or PIP_INDEX_URL, `index-url` in pip.conf or uv.toml, or `index-url` in imgbuild's settings"
            ));
        }
        let name = req.name.to_string();
        let found = crate::lock::index::first_found(self.index, self.indexes, &name, |_, files| {
            Ok(self.best(req, files))
        })
        .map_err(|e| crate::text::error_chain(&e))?;
        found.ok_or_else(|| {
            let when = self
                .cutoff
                .map(|c| format!(" uploaded by {c}"))
                .unwrap_or_default();
            format!(
                "no wheel{when} on {} satisfies the build requirement `{text}` for this Python",
                crate::lock::index_config::redact_all(self.indexes)
            )
        })
    }

    fn best(&self, req: &Requirement<VerbatimUrl>, files: Vec<IndexFile>) -> Option<Pin> {
        let mut best: Option<(Version, usize, IndexFile)> = None;
        for f in files {
            let Ok(wheel) = WheelFilename::parse(&f.filename) else {
                continue;
            };
            let Some(priority) = self.tags.priority(&wheel) else {
                continue;
            };
            let Ok(version) = Version::from_str(&wheel.version.to_string()) else {
                continue;
            };
            let fits_python = f
                .requires_python
                .as_deref()
                .is_none_or(|rp| self.env.satisfies_requires_python(rp).unwrap_or(false));
            let in_time = match (self.cutoff, f.upload_time.as_deref()) {
                (Some(cutoff), Some(t)) => !after(t, cutoff),
                (Some(_), None) => false,
                (None, _) => true,
            };
            if wheel.name != req.name
                || f.yanked
                || f.sha256.is_none()
                || !fits_python
                || !in_time
                || !allows(req, &version.to_string())
                || (version.any_prerelease() && !asks_for_prerelease(req))
            {
                continue;
            }
            let better = match &best {
                None => true,
                Some((v, p, b)) => {
                    (
                        &version,
                        std::cmp::Reverse(priority),
                        std::cmp::Reverse(&f.filename),
                    ) > (v, std::cmp::Reverse(*p), std::cmp::Reverse(&b.filename))
                }
            };
            if better {
                best = Some((version, priority, f));
            }
        }
        best.map(|(version, _, f)| Pin {
            name: req.name.to_string(),
            version: version.to_string(),
            sha256: f.sha256.clone().expect("checked above"),
            filename: f.filename,
            url: f.url,
            upload_time: f.upload_time,
        })
    }
}

fn allows(req: &Requirement<VerbatimUrl>, version: &str) -> bool {
    let Ok(v) = Version::from_str(version) else {
        return false;
    };
    match &req.version_or_url {
        Some(VersionOrUrl::VersionSpecifier(specs)) => specs.contains(&v),
        _ => true,
    }
}

/// Pre-releases only where a specifier names one (PEP 440).
fn asks_for_prerelease(req: &Requirement<VerbatimUrl>) -> bool {
    match &req.version_or_url {
        Some(VersionOrUrl::VersionSpecifier(specs)) => {
            specs.iter().any(|s| s.version().any_prerelease())
        }
        _ => false,
    }
}

/// Whether RFC 3339 time `t` is later than `cutoff`, both in UTC as indexes
/// and locks write them; compared to the second.
pub fn after(t: &str, cutoff: &str) -> bool {
    let key = |s: &str| {
        let s = s.trim();
        // A date alone (uv's `exclude-newer = "2024-01-01"`) is its midnight.
        let mut k: String = s.chars().take(19).collect();
        if k.len() == 10 {
            k.push_str("T00:00:00");
        }
        k.replace(' ', "T")
    };
    key(t) > key(cutoff)
}

/// The `Requires-Dist` lines of a wheel's METADATA.
pub fn requires_dist(wheel: &Path) -> Result<Vec<String>, String> {
    let file = std::fs::File::open(wheel).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a wheel: {e}"))?;
    let Some(i) = (0..archive.len()).find(|&i| {
        archive
            .name_for_index(i)
            .and_then(|n| n.ok())
            .is_some_and(|n| n.ends_with(".dist-info/METADATA") && n.matches('/').count() == 1)
    }) else {
        return Err("the wheel has no .dist-info/METADATA".into());
    };
    let mut text = String::new();
    archive
        .by_index(i)
        .map_err(|e| e.to_string())?
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| format!("METADATA: {e}"))?;
    Ok(text
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("Requires-Dist:"))
        .map(|r| r.trim().to_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::markers::test_python;
    use std::cell::RefCell;

    struct Page(Vec<IndexFile>);

    impl SimpleIndex for Page {
        fn project_files(
            &self,
            _: &str,
            project: &str,
        ) -> Result<Vec<IndexFile>, crate::lock::LockError> {
            Ok(self
                .0
                .iter()
                .filter(|f| f.filename.starts_with(&format!("{project}-")))
                .cloned()
                .collect())
        }
    }

    fn file(filename: &str, uploaded: &str) -> IndexFile {
        IndexFile {
            filename: filename.into(),
            url: format!("https://files.example/{filename}"),
            sha256: Some("a".repeat(64)),
            size: None,
            upload_time: Some(uploaded.into()),
            yanked: false,
            requires_python: None,
        }
    }

    /// A wheel holding only METADATA with these Requires-Dist lines.
    fn wheel(dir: &Path, filename: &str, requires: &[&str]) -> PathBuf {
        let path = dir.join(filename);
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let (name, version) = {
            let mut parts = filename.split('-');
            (parts.next().unwrap(), parts.next().unwrap())
        };
        zip.start_file(
            format!("{name}-{version}.dist-info/METADATA"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        let mut text = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
        for r in requires {
            text.push_str(&format!("Requires-Dist: {r}\n"));
        }
        std::io::Write::write_all(&mut zip, text.as_bytes()).unwrap();
        zip.finish().unwrap();
        path
    }

    #[test]
    fn the_newest_version_uploaded_by_the_cutoff_is_pinned_with_its_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        let page = Page(vec![
            file("hatchling-1.20.0-py3-none-any.whl", "2023-12-01T00:00:00Z"),
            file(
                "hatchling-1.21.0-py3-none-any.whl",
                "2024-01-01T00:00:00.5Z",
            ),
            file("hatchling-1.27.0-py3-none-any.whl", "2025-01-01T00:00:00Z"),
            file(
                "hatchling-1.28.0rc1-py3-none-any.whl",
                "2024-02-01T00:00:00Z",
            ),
            file("pathspec-0.12.1-py3-none-any.whl", "2023-12-10T00:00:00Z"),
            file("tomli-2.0.1-py3-none-any.whl", "2022-02-08T00:00:00Z"),
        ]);
        let fetched = RefCell::new(Vec::new());
        let fetch = |p: &Pin| {
            fetched.borrow_mut().push(p.filename.clone());
            let requires: &[&str] = match p.name.as_str() {
                "hatchling" => &["pathspec>=0.10.1", "tomli>=1.2.2; python_version < '3.11'"],
                _ => &[],
            };
            Ok(wheel(dir.path(), &p.filename, requires))
        };
        let python = test_python("x86_64");
        let env = MarkerEnv::for_target(&python).unwrap();
        let tags = Tags::for_target(&python);
        let indexes = ["https://index.example/simple".to_string()];
        let resolver = Resolver {
            index: &page,
            indexes: &indexes,
            env: &env,
            tags: &tags,
            cutoff: Some("2024-06-01"),
            fetch: &fetch,
        };
        let mut pins = BTreeMap::new();
        resolver
            .resolve(&["hatchling>=1.18".into()], &mut pins)
            .unwrap();
        let got: Vec<(&str, &str)> = pins
            .values()
            .map(|(p, _)| (p.name.as_str(), p.version.as_str()))
            .collect();
        // 3.11: tomli's marker is false; 1.27 is too new; the rc is a pre-release.
        assert_eq!(got, [("hatchling", "1.21.0"), ("pathspec", "0.12.1")]);
        let err = resolver
            .resolve(&["hatchling<1.21".into()], &mut pins)
            .unwrap_err();
        assert!(err.contains("conflicts with hatchling 1.21.0"), "{err}");
    }

    #[test]
    fn times_compare_to_the_second_and_a_date_is_its_midnight() {
        assert!(after("2024-01-01T00:00:01Z", "2024-01-01"));
        assert!(!after("2023-12-31T23:59:59.999Z", "2024-01-01T00:00:00Z"));
        assert!(!after("2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00Z"));
    }
}
