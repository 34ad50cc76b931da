//! Download URLs for the selected wheels whose lock lists them by file name
//! and hash only (poetry.lock, pdm.lock): each is found by name on its index
//! page, and the hash the index publishes must be the lock's.
//!
//! Runs after selection and only for wheels not already cached, so a warm or
//! `--offline` build asks no index.

use super::index::first_found;
use super::index_config::{redact, redact_all, IndexSettings};
use super::select::SelectedWheel;
use super::{LockError, SimpleIndex};
use std::path::Path;

/// Fills in `url` for every wheel without one for which `cached` is false.
pub fn locate_files(
    wheels: &mut [SelectedWheel],
    lockfile: &Path,
    settings: &IndexSettings,
    index: &(dyn SimpleIndex + Sync),
    cached: &(dyn Fn(&SelectedWheel) -> bool + Sync),
    jobs: usize,
) -> Result<(), LockError> {
    let path = lockfile.display().to_string();
    let wanted: Vec<usize> = (0..wheels.len())
        .filter(|&i| wheels[i].url.is_none() && !cached(&wheels[i]))
        .collect();
    let configured = settings.urls();
    let found = crate::parallel::map_ordered(&wanted, jobs, |&i| {
        locate_one(&wheels[i], &path, settings, &configured, index)
    });
    for (i, url) in wanted.into_iter().zip(found) {
        wheels[i].url = Some(url?);
    }
    Ok(())
}

fn locate_one(
    wheel: &SelectedWheel,
    path: &str,
    settings: &IndexSettings,
    configured: &[String],
    index: &dyn SimpleIndex,
) -> Result<String, LockError> {
    let package_err = |message: String| LockError::Package {
        path: path.to_owned(),
        package: format!("{} {}", wheel.name, wheel.version),
        message,
    };
    let indexes: Vec<String> = match &wheel.index {
        Some(own) => vec![own.clone()],
        None => configured.to_vec(),
    };
    if indexes.is_empty() {
        return Err(package_err(format!(
            "{} has no URL in the lock and no package index is configured ({}); set UV_DEFAULT_INDEX or PIP_INDEX_URL, `index-url` in pip.conf or uv.toml, or `index-url` in imgbuild's settings",
            wheel.filename,
            settings.describe_read()
        )));
    }
    let found = first_found(index, &indexes, &wheel.name, |index_url, files| {
        let Some(file) = files.into_iter().find(|f| f.filename == wheel.filename) else {
            return Ok(None);
        };
        if let Some(published) = &file.sha256 {
            if *published != wheel.sha256 {
                return Err(package_err(format!(
                    "{} on {} has sha256 {published}, but the lock says {}; the lock was edited or the file re-published: lock again from a trusted index",
                    wheel.filename,
                    redact(index_url),
                    wheel.sha256
                )));
            }
        }
        Ok(Some(file.url))
    })?;
    found.ok_or_else(|| {
        package_err(format!(
            "{} is not on {}; check the index settings ({})",
            wheel.filename,
            redact_all(&indexes),
            settings.describe_read()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::index_config::ConfiguredIndex;
    use crate::lock::test_support::{error_of, hash, FakeIndex};
    use crate::lock::IndexFile;

    fn wheel(name: &str, h: char, index: Option<&str>) -> SelectedWheel {
        SelectedWheel {
            name: name.into(),
            version: "1.0".into(),
            filename: format!("{name}-1.0-py3-none-any.whl"),
            url: None,
            sha256: hash(h),
            size: None,
            index: index.map(str::to_owned),
            from_sdist: false,
        }
    }

    fn settings(urls: &[&str]) -> IndexSettings {
        let mut s = IndexSettings {
            read: vec!["UV_DEFAULT_INDEX".into()],
            ..Default::default()
        };
        for (i, u) in urls.iter().enumerate() {
            let c = ConfiguredIndex {
                url: u.to_string(),
                origin: "test".into(),
            };
            if i == 0 {
                s.default = Some(c);
            } else {
                s.extra.push(c);
            }
        }
        s
    }

    /// Locates `wheels` of `lockfile` on `indexes`, none cached, one at a time.
    fn locate_one_by_one(
        wheels: &mut [SelectedWheel],
        lockfile: &str,
        indexes: &[&str],
    ) -> Result<(), LockError> {
        locate_files(
            wheels,
            Path::new(lockfile),
            &settings(indexes),
            &index(),
            &|_| false,
            1,
        )
    }

    fn index() -> FakeIndex {
        let file = |name: &str, h: Option<char>| IndexFile {
            filename: name.into(),
            url: format!("https://files.example/{name}"),
            sha256: h.map(hash),
            size: None,
            upload_time: None,
            yanked: false,
            requires_python: None,
        };
        FakeIndex(vec![
            (
                "h11".into(),
                vec![
                    file("h11-1.0.tar.gz", Some('0')),
                    file("h11-1.0-py3-none-any.whl", Some('a')),
                ],
            ),
            ("idna".into(), vec![file("idna-1.0-py3-none-any.whl", None)]),
        ])
    }

    #[test]
    fn urls_come_from_the_index_by_file_name_and_cached_wheels_are_skipped() {
        let mut wheels = vec![
            wheel("h11", 'a', None),
            wheel("idna", 'b', None),
            wheel("gone", 'c', None),
        ];
        locate_files(
            &mut wheels,
            Path::new("poetry.lock"),
            &settings(&["https://index.example/simple"]),
            &index(),
            &|w| w.name == "gone",
            2,
        )
        .unwrap();
        assert_eq!(
            wheels[0].url.as_deref(),
            Some("https://files.example/h11-1.0-py3-none-any.whl")
        );
        // The index publishes no hash: the download is still checked against the lock's.
        assert_eq!(
            wheels[1].url.as_deref(),
            Some("https://files.example/idna-1.0-py3-none-any.whl")
        );
        assert_eq!(wheels[2].url, None);
    }

    #[test]
    fn a_hash_the_index_contradicts_fails_naming_the_lockfile() {
        let mut wheels = vec![wheel("h11", 'f', None)];
        let err = error_of(locate_one_by_one(
            &mut wheels,
            "app/poetry.lock",
            &["https://u:secret@index.example/simple"],
        ));
        assert!(
            err.starts_with("app/poetry.lock: package `h11 1.0`: h11-1.0-py3-none-any.whl on https://u:***@index.example/simple has sha256"),
            "{err}"
        );
        assert!(err.contains(&hash('f')) && !err.contains("secret"), "{err}");
    }

    #[test]
    fn without_an_index_the_error_lists_the_settings_read() {
        let mut wheels = vec![wheel("h11", 'a', None)];
        let err = error_of(locate_one_by_one(&mut wheels, "pdm.lock", &[]));
        assert!(
            err.contains("no package index is configured (read UV_DEFAULT_INDEX)"),
            "{err}"
        );
    }

    #[test]
    fn a_package_source_index_replaces_the_configured_ones_and_missing_files_are_named() {
        let mut wheels = vec![wheel("h11", 'a', Some("https://private.example/simple"))];
        locate_one_by_one(&mut wheels, "poetry.lock", &[]).unwrap();
        assert!(wheels[0].url.is_some());
        let mut wheels = vec![SelectedWheel {
            filename: "h11-1.0-cp311-abi3-linux_x86_64.whl".into(),
            ..wheel("h11", 'a', None)
        }];
        let err = error_of(locate_one_by_one(
            &mut wheels,
            "poetry.lock",
            &["https://a.example/simple", "https://b.example/simple"],
        ));
        assert!(
            err.contains("h11-1.0-cp311-abi3-linux_x86_64.whl is not on https://a.example/simple, https://b.example/simple"),
            "{err}"
        );
    }
}
