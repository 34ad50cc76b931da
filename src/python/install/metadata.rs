//! The `.dist-info` directory and its email-style files: which directory is
//! the wheel's, and that METADATA and WHEEL agree with the file name and with
//! what this installer supports.

use super::archive::ZipEntry;
use super::{Ctx, WheelError};
use pep508_rs::PackageName;
use std::collections::HashMap;
use std::str::FromStr;

/// The one top-level `*.dist-info` directory, whose name must match the file name's.
pub(super) fn find_dist_info(
    entries: &[ZipEntry],
    file_dist: &PackageName,
    ctx: &Ctx,
) -> Result<String, WheelError> {
    let mut found: Vec<&str> = entries
        .iter()
        .filter_map(|e| {
            let top = e.name.split('/').next()?;
            let is_inside = e.name.len() > top.len() || e.is_dir;
            top.strip_suffix(".dist-info").filter(|_| is_inside)
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [one] => {
            let dist = one.split('-').next().unwrap_or_default();
            if PackageName::from_str(dist).ok().as_ref() != Some(file_dist) {
                return Err(ctx.invalid(format!(
                    "{one}.dist-info does not belong to {file_dist}, the name in the file name"
                )));
            }
            Ok(one.to_string())
        }
        [] => Err(ctx.invalid("there is no .dist-info directory".into())),
        many => Err(ctx.invalid(format!(
            "there are several .dist-info directories: {}",
            many.join(", ")
        ))),
    }
}

/// Headers of an email-style file (METADATA, WHEEL): first value of each key.
fn email_headers(text: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            break; // the body starts
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| out.get_mut(k)) {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        last = None;
        if let Some((k, v)) = line.split_once(':') {
            if k.contains(' ') || out.contains_key(k) {
                continue;
            }
            out.insert(k.to_string(), v.trim().to_string());
            last = Some(k.to_string());
        }
    }
    out
}

/// METADATA's Name and Version must be the file name's (a local version may be dropped).
pub(super) fn check_metadata(
    metadata: &[u8],
    file_dist: &PackageName,
    file_version: &str,
    ctx: &Ctx,
) -> Result<(PackageName, String), WheelError> {
    let headers = email_headers(&String::from_utf8_lossy(metadata));
    let field = |k: &str| {
        headers
            .get(k)
            .cloned()
            .ok_or_else(|| ctx.invalid(format!("METADATA has no {k} field")))
    };
    let raw_name = field("Name")?;
    let name = PackageName::from_str(&raw_name).map_err(|source| WheelError::Name {
        wheel: ctx.wheel.into(),
        name: raw_name.clone(),
        source,
    })?;
    let version = field("Version")?;
    if &name != file_dist {
        return Err(ctx.invalid(format!(
            "METADATA names {:?} but the file name says {:?}",
            name.as_ref(),
            file_dist.as_ref()
        )));
    }
    let parse = |v: &str| {
        pep440_rs::Version::from_str(v).map_err(|source| WheelError::Version {
            wheel: ctx.wheel.into(),
            version: v.to_string(),
            source,
        })
    };
    let (meta_v, file_v) = (parse(&version)?, parse(file_version)?);
    if meta_v != file_v && meta_v != file_v.clone().without_local() {
        return Err(ctx.invalid(format!(
            "METADATA has version {version} but the file name says {file_version}"
        )));
    }
    Ok((name, version))
}

/// Wheel-Version must be 1.x (0.1 is tolerated as pip and uv do). Root-Is-Purelib
/// only picks purelib or platlib, which are the same directory in a venv.
pub(super) fn check_wheel_file(text: &[u8], ctx: &Ctx) -> Result<(), WheelError> {
    let headers = email_headers(&String::from_utf8_lossy(text));
    let version = headers
        .get("Wheel-Version")
        .ok_or_else(|| ctx.invalid("WHEEL has no Wheel-Version".into()))?;
    match version.split_once('.') {
        Some(("1", _)) | Some(("0", "1")) => Ok(()),
        Some((major, _)) => Err(ctx.invalid(format!(
            "Wheel-Version {version} (major {major}) is not supported; only 1.x is"
        ))),
        None => Err(ctx.invalid(format!("Wheel-Version {version:?} is not `major.minor`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_ctx as ctx;
    use super::*;

    #[test]
    fn wheel_version_must_be_major_one() {
        assert!(check_wheel_file(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n", &ctx()).is_ok());
        assert!(check_wheel_file(b"Wheel-Version: 1.9\n", &ctx()).is_ok());
        assert!(check_wheel_file(b"Wheel-Version: 2.0\n", &ctx()).is_err());
        assert!(check_wheel_file(b"Root-Is-Purelib: true\n", &ctx()).is_err());
    }

    #[test]
    fn metadata_must_match_the_file_name() {
        let name = |s: &str| PackageName::from_str(s).unwrap();
        let m = b"Metadata-Version: 2.1\nName: Demo_Pkg\nVersion: 1.0\n\nName: body\n";
        assert_eq!(
            check_metadata(m, &name("demo-pkg"), "1.0", &ctx()).unwrap(),
            (name("demo-pkg"), "1.0".into())
        );
        assert!(check_metadata(m, &name("demo-pkg"), "1.0+local", &ctx()).is_ok());
        assert!(check_metadata(m, &name("other"), "1.0", &ctx()).is_err());
        assert!(check_metadata(m, &name("demo-pkg"), "1.1", &ctx()).is_err());
    }

    #[test]
    fn a_bad_version_or_name_keeps_its_parse_error_as_the_source() {
        use std::error::Error as _;
        let name = |s: &str| PackageName::from_str(s).unwrap();
        let err =
            check_metadata(b"Name: demo\nVersion: one\n", &name("demo"), "1", &ctx()).unwrap_err();
        assert!(matches!(err, WheelError::Version { ref version, .. } if version == "one"));
        assert!(err.source().is_some());
        assert!(!err.to_string().contains(&err.source().unwrap().to_string()));
        let err =
            check_metadata(b"Name: -demo\nVersion: 1\n", &name("demo"), "1", &ctx()).unwrap_err();
        assert!(matches!(err, WheelError::Name { .. }), "{err}");
    }
}
