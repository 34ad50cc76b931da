//! A package's licence, read from its wheel's METADATA: `License-Expression`
//! (PEP 639), else `License`, else the `License ::` classifiers. SBOMs need
//! SPDX identifiers; free text that is not one is kept as text for CycloneDX
//! and becomes NOASSERTION in SPDX.

use std::io::Read;
use std::path::Path;

/// What a wheel declares.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Licence {
    /// An SPDX expression made of identifiers we know (safe for validators).
    Spdx(String),
    /// Free text, e.g. a `License:` field that is a whole licence file.
    Text(String),
}

impl Licence {
    /// SPDX `licenseDeclared`: the expression, or NOASSERTION.
    pub fn spdx(l: Option<&Licence>) -> String {
        match l {
            Some(Licence::Spdx(e)) => e.clone(),
            _ => "NOASSERTION".into(),
        }
    }
}

/// SPDX licence list identifiers that Python packages commonly declare. An
/// expression made only of these (and AND/OR/WITH, parentheses) is kept.
const KNOWN_IDS: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "Apache-2.0",
    "Artistic-2.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-3-Clause-Clear",
    "BSL-1.0",
    "CC0-1.0",
    "EPL-2.0",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "HPND",
    "ISC",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "LLVM-exception",
    "MIT",
    "MIT-0",
    "MPL-2.0",
    "PSF-2.0",
    "Python-2.0",
    "Unicode-DFS-2016",
    "Unicode-3.0",
    "Unlicense",
    "Zlib",
];

/// Trove classifiers (after `License :: `) that name exactly one SPDX licence.
const CLASSIFIERS: &[(&str, &str)] = &[
    ("OSI Approved :: MIT License", "MIT"),
    ("OSI Approved :: Apache Software License", "Apache-2.0"),
    ("OSI Approved :: ISC License (ISCL)", "ISC"),
    (
        "OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)",
        "MPL-2.0",
    ),
    (
        "OSI Approved :: Python Software Foundation License",
        "PSF-2.0",
    ),
    ("OSI Approved :: The Unlicense (Unlicense)", "Unlicense"),
    ("OSI Approved :: zlib/libpng License", "Zlib"),
    (
        "OSI Approved :: Boost Software License 1.0 (BSL-1.0)",
        "BSL-1.0",
    ),
    (
        "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication",
        "CC0-1.0",
    ),
];

/// The licence a wheel's METADATA declares, or `None`. Reading problems are
/// the caller's to report; a wheel without METADATA declares nothing.
pub fn from_wheel(path: &Path) -> std::io::Result<Option<Licence>> {
    // Buffered: the zip reader makes a small read per directory entry.
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut zip = zip::ZipArchive::new(file).map_err(std::io::Error::other)?;
    let name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| {
            n.split_once('/')
                .is_some_and(|(dir, file)| dir.ends_with(".dist-info") && file == "METADATA")
        });
    let Some(name) = name else { return Ok(None) };
    let mut text = String::new();
    zip.by_name(&name)
        .map_err(std::io::Error::other)?
        .take(4 << 20)
        .read_to_string(&mut text)?;
    Ok(from_metadata(&text))
}

/// The licence from METADATA's headers (RFC 822 style; the body is ignored).
pub fn from_metadata(text: &str) -> Option<Licence> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |k: &str| {
        headers
            .iter()
            .find(|(h, v)| h == k && !v.trim().is_empty() && v.trim() != "UNKNOWN")
            .map(|(_, v)| v.trim().to_string())
    };
    if let Some(e) = get("license-expression") {
        return Some(as_spdx(&e).map_or(Licence::Text(e), Licence::Spdx));
    }
    if let Some(l) = get("license") {
        if let Some(e) = as_spdx(&l) {
            return Some(Licence::Spdx(e));
        }
    }
    let from_classifiers: Vec<&str> = headers
        .iter()
        .filter(|(h, _)| h == "classifier")
        .filter_map(|(_, v)| v.strip_prefix("License :: "))
        .filter_map(|c| {
            CLASSIFIERS
                .iter()
                .find(|(k, _)| *k == c.trim())
                .map(|(_, id)| *id)
        })
        .collect();
    match from_classifiers.as_slice() {
        [one] => return Some(Licence::Spdx(one.to_string())),
        // Several classifiers: the package may be under any of them.
        [_, ..] => {
            let mut ids = from_classifiers.clone();
            ids.sort();
            ids.dedup();
            return Some(Licence::Spdx(ids.join(" OR ")));
        }
        [] => {}
    }
    get("license").map(Licence::Text)
}

/// The text as an SPDX expression when every identifier in it is known
/// (matched case-insensitively and written in the list's case).
fn as_spdx(text: &str) -> Option<String> {
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    let mut out = Vec::new();
    let mut ids = 0;
    for tok in spaced.split_whitespace() {
        let t = match tok.to_ascii_uppercase().as_str() {
            "AND" | "OR" | "WITH" => tok.to_ascii_uppercase(),
            "(" | ")" => tok.to_string(),
            _ => {
                ids += 1;
                KNOWN_IDS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(tok))?
                    .to_string()
            }
        };
        out.push(t);
    }
    (ids > 0).then(|| out.join(" ").replace("( ", "(").replace(" )", ")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licence_expression_wins() {
        let m = "Metadata-Version: 2.4\nName: x\nLicense-Expression: mit OR apache-2.0\nLicense: BSD\n\nbody";
        assert_eq!(
            from_metadata(m),
            Some(Licence::Spdx("MIT OR Apache-2.0".into()))
        );
    }

    #[test]
    fn licence_field_then_classifiers() {
        assert_eq!(
            from_metadata("Name: x\nLicense: BSD-3-Clause\n"),
            Some(Licence::Spdx("BSD-3-Clause".into()))
        );
        let m = "Name: x\nLicense: Copyright (c) someone\n   all rights\nClassifier: License :: OSI Approved :: MIT License\n";
        assert_eq!(from_metadata(m), Some(Licence::Spdx("MIT".into())));
    }

    #[test]
    fn free_text_is_kept_as_text_and_asserts_nothing_in_spdx() {
        let m = "Name: x\nLicense: Copyright (c) someone\n  line two\nClassifier: License :: OSI Approved :: BSD License\n";
        let l = from_metadata(m);
        assert_eq!(
            l,
            Some(Licence::Text("Copyright (c) someone\nline two".into()))
        );
        assert_eq!(Licence::spdx(l.as_ref()), "NOASSERTION");
    }

    #[test]
    fn nothing_declared_is_none() {
        assert_eq!(
            from_metadata("Name: x\nLicense: UNKNOWN\n\nLicense: MIT"),
            None
        );
        assert_eq!(Licence::spdx(None), "NOASSERTION");
    }

    #[test]
    fn parentheses_and_with_are_kept() {
        assert_eq!(
            as_spdx("(Apache-2.0 WITH LLVM-exception) or mit").as_deref(),
            Some("(Apache-2.0 WITH LLVM-exception) OR MIT")
        );
        assert_eq!(as_spdx("Some-Custom-1.0"), None);
    }
}
