//! The base image's package database: the version dpkg (`var/lib/dpkg/status`,
//! distroless `status.d`) or apk (`lib/apk/db/installed`) records for a
//! package, and the `major.minor[.patch]` read from such a version string.

use crate::python::rootfs::RootFs;

/// The `Version:` of a dpkg package, from var/lib/dpkg/status or a distroless
/// status.d file.
pub(super) fn dpkg_version(rootfs: &RootFs, package: &str) -> Option<String> {
    let mut files = vec!["var/lib/dpkg/status".to_owned()];
    files.extend(
        rootfs
            .list_dir("var/lib/dpkg/status.d")
            .into_iter()
            .map(|n| format!("var/lib/dpkg/status.d/{n}")),
    );
    files.iter().find_map(|f| {
        let text = String::from_utf8_lossy(rootfs.read(f)?).into_owned();
        stanza_version(&text, ("Package:", "Version:"), package)
    })
}

/// The `V:` of the first apk package among `packages`.
pub(super) fn apk_version(rootfs: &RootFs, packages: &[&str]) -> Option<String> {
    ["lib/apk/db/installed", "usr/lib/apk/db/installed"]
        .iter()
        .find_map(|f| {
            let text = String::from_utf8_lossy(rootfs.read(f)?).into_owned();
            packages
                .iter()
                .find_map(|wanted| stanza_version(&text, ("P:", "V:"), wanted))
        })
}

/// In a database of blank-line-separated stanzas, the version field of the
/// stanza whose name field is `wanted`. `keys` are the (name, version) prefixes.
fn stanza_version(text: &str, keys: (&str, &str), wanted: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let mut name = None;
        let mut version = None;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix(keys.0) {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix(keys.1) {
                version = Some(v.trim());
            }
        }
        (name == Some(wanted))
            .then(|| version.map(str::to_owned))
            .flatten()
    })
}

/// "2.36-9+deb12u4" → (2, 36); "1.2.5-r0" → (1, 2); "3.11.2-6" → (3, 11).
pub(super) fn major_minor(version: &str) -> Option<(u32, u32)> {
    let (a, b, _) = version_triplet(version)?;
    Some((a, b))
}

fn version_triplet(version: &str) -> Option<(u32, u32, Option<u32>)> {
    let version = version.split_once(':').map_or(version, |(_, v)| v);
    let mut parts = version.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        (digits.parse::<u32>().ok(), digits.len() == p.len())
    });
    let (major, full) = parts.next()?;
    let major = major.filter(|_| full)?;
    let (minor, full_minor) = parts.next()?;
    let minor = minor?;
    let patch = if full_minor {
        parts.next().and_then(|(p, _)| p)
    } else {
        None
    };
    Some((major, minor, patch))
}

/// The patch number of `version` if it is a release of `minor` (3.11.2 for 3.11).
pub(super) fn patch_of(version: &str, minor: &str) -> Option<u32> {
    let (a, b, patch) = version_triplet(version)?;
    (format!("{a}.{b}") == minor).then_some(patch).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_strings_from_package_databases() {
        assert_eq!(major_minor("2.36-9+deb12u4"), Some((2, 36)));
        assert_eq!(major_minor("1.2.5-r0"), Some((1, 2)));
        assert_eq!(patch_of("3.11.2-6+deb12u5", "3.11"), Some(2));
        assert_eq!(patch_of("3.12.0~rc1-1", "3.12"), Some(0));
        assert_eq!(patch_of("3.11.2", "3.12"), None);
    }

    #[test]
    fn stanzas_are_matched_by_their_own_name_field() {
        let db = "Package: libc6\nVersion: 2.36-9\n\nPackage: python3.11\nVersion: 3.11.2-6\n";
        let dpkg = ("Package:", "Version:");
        assert_eq!(
            stanza_version(db, dpkg, "python3.11").as_deref(),
            Some("3.11.2-6")
        );
        assert_eq!(stanza_version(db, dpkg, "python3"), None);
        assert_eq!(
            stanza_version("P:musl\nV:1.2.5-r0\n", ("P:", "V:"), "musl").as_deref(),
            Some("1.2.5-r0")
        );
    }
}
