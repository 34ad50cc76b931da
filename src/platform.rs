//! Target platforms (`linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`): parsed
//! from user input, read from and written to OCI `platform` objects, matched
//! against a base image's index with the normalisation Docker and containerd use.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("invalid platform {value:?}: {reason}; write os/arch[/variant], such as linux/amd64 or linux/arm64")]
    Invalid { value: String, reason: String },
    #[error("platform {0} has no Python wheel architecture; use linux/amd64, linux/arm64, linux/arm/v7, linux/arm/v6, linux/386, linux/ppc64le, linux/s390x or linux/riscv64")]
    NoPythonArch(Platform),
    #[error("platform list {0:?} is empty; give at least one, such as linux/amd64")]
    EmptyList(String),
    #[error("platform {second} repeats {first} in {list:?}; list each platform once")]
    Duplicate {
        list: String,
        first: String,
        second: String,
    },
}

/// Architectures Go (and so every container tool) knows, after normalisation.
const KNOWN_ARCHES: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

fn invalid(value: &str, reason: impl Into<String>) -> PlatformError {
    PlatformError::Invalid {
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn is_component(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Spellings people type for an architecture, mapped to the OCI name. A variant
/// the alias implies (armhf = arm/v7) is returned with it.
fn arch_alias(arch: &str) -> (&str, Option<&'static str>) {
    match arch {
        "x86_64" | "x86-64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "i386" | "i686" => ("386", None),
        "armhf" => ("arm", Some("v7")),
        "armel" => ("arm", Some("v6")),
        other => (other, None),
    }
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]`. Architecture aliases (x86_64, aarch64, i386,
    /// armhf, armel) become their OCI names; a variant given is kept as given,
    /// so `linux/arm64/v8` stays distinct text from `linux/arm64` (they still
    /// [`matches`](Self::matches) each other).
    pub fn parse(value: &str) -> Result<Self, PlatformError> {
        let text = value.trim();
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(invalid(value, "expected two or three parts separated by /"));
        }
        for part in &parts {
            if !is_component(part) {
                return Err(invalid(
                    value,
                    format!("{part:?} is not a valid component (letters, digits, _ . - only)"),
                ));
            }
        }
        let os = parts[0].to_ascii_lowercase();
        let arch_lower = parts[1].to_ascii_lowercase();
        let (arch, implied_variant) = arch_alias(&arch_lower);
        if !KNOWN_ARCHES.contains(&arch) {
            return Err(invalid(
                value,
                format!("unknown architecture {:?}", parts[1]),
            ));
        }
        let variant = match (parts.get(2), implied_variant) {
            (Some(v), Some(implied))
                if normalise_arm_variant(&v.to_ascii_lowercase()) != implied =>
            {
                return Err(invalid(
                    value,
                    format!("{} means {arch}/{implied}, not variant {v}", parts[1]),
                ));
            }
            (Some(v), _) => Some(v.to_ascii_lowercase()),
            (None, implied) => implied.map(str::to_string),
        };
        Ok(Platform {
            os,
            architecture: arch.to_string(),
            variant,
        })
    }

    /// Parses a comma-separated list (`linux/amd64,linux/arm64`), refusing an
    /// empty list and platforms that match one another.
    pub fn parse_list(value: &str) -> Result<Vec<Self>, PlatformError> {
        let items: Vec<&str> = value.split(',').map(str::trim).collect();
        if items.iter().all(|s| s.is_empty()) {
            return Err(PlatformError::EmptyList(value.to_string()));
        }
        let mut out: Vec<Platform> = Vec::new();
        for item in items {
            if item.is_empty() {
                return Err(invalid(value, "the list has an empty entry"));
            }
            let p = Platform::parse(item)?;
            if let Some(first) = out.iter().find(|q| q.matches(&p)) {
                return Err(PlatformError::Duplicate {
                    list: value.to_string(),
                    first: first.to_string(),
                    second: p.to_string(),
                });
            }
            out.push(p);
        }
        Ok(out)
    }

    /// The canonical form containerd compares: lower case, aliases resolved,
    /// default variants dropped (arm64 v8, amd64 v1) or filled in (arm → v7).
    pub fn normalised(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            other => other.to_string(),
        };
        let arch_lower = self.architecture.to_ascii_lowercase();
        let variant_lower = self.variant.as_deref().unwrap_or("").to_ascii_lowercase();
        let (arch, variant): (String, String) = match arch_lower.as_str() {
            "i386" | "i686" | "386" => ("386".into(), String::new()),
            "x86_64" | "x86-64" | "amd64" => (
                "amd64".into(),
                if variant_lower == "v1" {
                    String::new()
                } else {
                    variant_lower
                },
            ),
            "aarch64" | "arm64" => (
                "arm64".into(),
                if matches!(variant_lower.as_str(), "8" | "v8") {
                    String::new()
                } else {
                    variant_lower
                },
            ),
            "armhf" => ("arm".into(), "v7".into()),
            "armel" => ("arm".into(), "v6".into()),
            "arm" => (
                "arm".into(),
                normalise_arm_variant(&variant_lower).to_string(),
            ),
            other => (other.to_string(), variant_lower),
        };
        Platform {
            os,
            architecture: arch,
            variant: if variant.is_empty() {
                None
            } else {
                Some(variant)
            },
        }
    }

    /// Whether two platforms name the same target once normalised, so that
    /// `linux/arm64` picks the `linux/arm64/v8` entry of an index and the reverse.
    pub fn matches(&self, other: &Platform) -> bool {
        self.normalised() == other.normalised()
    }

    /// The machine name Python reports (`platform.machine()`), which wheel tags
    /// such as `manylinux_2_17_x86_64` are built from.
    pub fn python_arch(&self) -> Result<&'static str, PlatformError> {
        let n = self.normalised();
        let arch = match (n.architecture.as_str(), n.variant.as_deref()) {
            ("amd64", None) => "x86_64",
            ("arm64", None) => "aarch64",
            ("arm", Some("v7")) => "armv7l",
            ("arm", Some("v6")) => "armv6l",
            ("386", None) => "i686",
            ("ppc64le", None) => "ppc64le",
            ("s390x", None) => "s390x",
            ("riscv64", None) => "riscv64",
            _ => return Err(PlatformError::NoPythonArch(self.clone())),
        };
        Ok(arch)
    }
}

/// containerd's rule for 32-bit arm: no variant means v7; bare digits get a `v`.
fn normalise_arm_variant(variant: &str) -> &str {
    match variant {
        "" | "7" | "v7" => "v7",
        "5" => "v5",
        "6" => "v6",
        "8" => "v8",
        other => other,
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parses_the_common_platforms() {
        assert_eq!(p("linux/amd64"), Platform::new("linux", "amd64", None));
        assert_eq!(p("linux/arm64"), Platform::new("linux", "arm64", None));
        assert_eq!(
            p("linux/arm64/v8"),
            Platform::new("linux", "arm64", Some("v8"))
        );
        assert_eq!(p("linux/arm/v7"), Platform::new("linux", "arm", Some("v7")));
        assert_eq!(p(" Linux/AMD64 "), Platform::new("linux", "amd64", None));
    }

    #[test]
    fn resolves_architecture_aliases() {
        assert_eq!(p("linux/x86_64"), p("linux/amd64"));
        assert_eq!(p("linux/aarch64"), p("linux/arm64"));
        assert_eq!(p("linux/i386"), p("linux/386"));
        assert_eq!(p("linux/armhf"), p("linux/arm/v7"));
        assert_eq!(p("linux/armel"), p("linux/arm/v6"));
        assert!(Platform::parse("linux/armhf/v6").is_err());
    }

    #[test]
    fn errors_name_the_bad_value() {
        for bad in [
            "linux",
            "linux/",
            "linux/amd64/v2/x",
            "linux/amd46",
            "linux/am d64",
            "",
            "/amd64",
        ] {
            let err = Platform::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(
                err.contains("linux/amd64"),
                "the message shows the expected shape: {err}"
            );
        }
        assert!(Platform::parse("linux/amd46")
            .unwrap_err()
            .to_string()
            .contains("unknown architecture \"amd46\""));
    }

    #[test]
    fn displays_as_written_form() {
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
    }

    #[test]
    fn matching_follows_containerd_normalisation() {
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm").matches(&p("linux/arm/v7")));
        assert!(p("linux/amd64").matches(&Platform::new("linux", "amd64", Some("v1"))));
        assert!(Platform::new("linux", "aarch64", None).matches(&p("linux/arm64")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
        assert!(!p("linux/amd64").matches(&p("linux/amd64/v3")));
        assert!(!p("linux/arm64").matches(&p("linux/amd64")));
        assert!(!p("linux/amd64").matches(&Platform::new("windows", "amd64", None)));
    }

    #[test]
    fn parse_list_splits_and_refuses_repeats() {
        assert_eq!(
            Platform::parse_list("linux/amd64, linux/arm64").unwrap(),
            vec![p("linux/amd64"), p("linux/arm64")]
        );
        let err = Platform::parse_list("linux/arm64,linux/arm64/v8")
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/arm64/v8 repeats linux/arm64"), "{err}");
        assert!(matches!(
            Platform::parse_list(" "),
            Err(PlatformError::EmptyList(_))
        ));
        let err = Platform::parse_list("linux/amd64,,linux/arm64")
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty entry"), "{err}");
        let err = Platform::parse_list("linux/amd64,linux/sparc99")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"linux/sparc99\""), "{err}");
    }

    #[test]
    fn python_arch_maps_to_machine_names() {
        let cases = [
            ("linux/amd64", "x86_64"),
            ("linux/arm64", "aarch64"),
            ("linux/arm64/v8", "aarch64"),
            ("linux/arm/v7", "armv7l"),
            ("linux/arm/v6", "armv6l"),
            ("linux/386", "i686"),
            ("linux/ppc64le", "ppc64le"),
            ("linux/s390x", "s390x"),
            ("linux/riscv64", "riscv64"),
        ];
        for (platform, machine) in cases {
            assert_eq!(p(platform).python_arch().unwrap(), machine, "{platform}");
        }
        let err = p("linux/mips64le").python_arch().unwrap_err().to_string();
        assert!(err.contains("linux/mips64le"), "{err}");
        assert!(p("linux/amd64/v3").python_arch().is_err());
    }

    #[test]
    fn serialises_as_oci_platform_object() {
        let json = serde_json::to_string(&p("linux/arm64/v8")).unwrap();
        assert_eq!(
            json,
            r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#
        );
        let json = serde_json::to_string(&p("linux/amd64")).unwrap();
        assert_eq!(json, r#"{"os":"linux","architecture":"amd64"}"#);
        // Index entries carry fields we do not model (os.version); they are ignored.
        let back: Platform = serde_json::from_str(
            r#"{"architecture":"arm","os":"linux","variant":"v7","os.version":"x"}"#,
        )
        .unwrap();
        assert_eq!(back, p("linux/arm/v7"));
    }
}
