//! PEP 508 markers evaluated for the image's Python, never the host's.

use super::interpreter::PythonInfo;
use pep508_rs::pep440_rs::{
    Version, VersionParseError, VersionSpecifiers, VersionSpecifiersParseError,
};
use pep508_rs::{
    ExtraName, InvalidNameError, MarkerEnvironment, MarkerEnvironmentBuilder, MarkerTree,
    Pep508Error,
};
use std::str::FromStr;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MarkerError {
    #[error("invalid environment marker `{marker}`")]
    Invalid {
        marker: String,
        #[source]
        source: Pep508Error,
    },
    #[error("invalid environment marker `{marker}`: it has a non-ASCII character; PEP 508 markers are ASCII")]
    NonAscii { marker: String },
    #[error("invalid extra name `{name}`: use letters, digits, `-`, `_` and `.`")]
    Extra {
        name: String,
        #[source]
        source: InvalidNameError,
    },
    #[error("invalid requires-python `{spec}`")]
    RequiresPython {
        spec: String,
        #[source]
        source: VersionSpecifiersParseError,
    },
    #[error("the target Python version {version} cannot be used in markers")]
    Version {
        version: String,
        #[source]
        source: VersionParseError,
    },
}

/// The marker environment of the target image.
#[derive(Clone, Debug)]
pub struct MarkerEnv {
    env: MarkerEnvironment,
    full_version: Version,
}

impl MarkerEnv {
    /// `platform_release` and `platform_version` describe the kernel the
    /// container will run on, which no build can know: they are empty.
    pub fn for_target(info: &PythonInfo) -> Result<MarkerEnv, MarkerError> {
        let minor = info.minor_version();
        let full = info.full_version();
        let env = MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
            implementation_name: "cpython",
            implementation_version: &full,
            os_name: "posix",
            platform_machine: &info.arch,
            platform_python_implementation: "CPython",
            platform_release: "",
            platform_system: "Linux",
            platform_version: "",
            python_full_version: &full,
            python_version: &minor,
            sys_platform: "linux",
        })
        .map_err(|source| MarkerError::Version {
            version: full.clone(),
            source,
        })?;
        let full_version = Version::from_str(&full).map_err(|source| MarkerError::Version {
            version: full.clone(),
            source,
        })?;
        Ok(MarkerEnv { env, full_version })
    }

    pub fn environment(&self) -> &MarkerEnvironment {
        &self.env
    }

    pub fn python_full_version(&self) -> &Version {
        &self.full_version
    }

    /// True when `marker_text` holds for the target with these extras active.
    /// An empty marker is always true.
    pub fn evaluate(&self, marker_text: &str, extras: &[String]) -> Result<bool, MarkerError> {
        if marker_text.trim().is_empty() {
            return Ok(true);
        }
        // pep508_rs 0.9 panics (slicing inside a character) on a non-ASCII
        // character after a marker expression; found by the `lock` fuzz target.
        if !marker_text.is_ascii() {
            return Err(MarkerError::NonAscii {
                marker: marker_text.to_owned(),
            });
        }
        let tree = MarkerTree::from_str(marker_text).map_err(|source| MarkerError::Invalid {
            marker: marker_text.to_owned(),
            source,
        })?;
        let extras = extras
            .iter()
            .map(|e| {
                ExtraName::from_str(e).map_err(|source| MarkerError::Extra {
                    name: e.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(tree.evaluate(&self.env, &extras))
    }

    /// True when the target's Python satisfies a `requires-python` specifier set.
    pub fn satisfies_requires_python(&self, spec: &str) -> Result<bool, MarkerError> {
        if spec.trim().is_empty() {
            return Ok(true);
        }
        let specifiers =
            VersionSpecifiers::from_str(spec).map_err(|source| MarkerError::RequiresPython {
                spec: spec.to_owned(),
                source,
            })?;
        Ok(specifiers.contains(&self.full_version))
    }
}

/// Python 3.11.2 on Debian 12 (glibc 2.36) for `arch`, for tests across the crate.
#[cfg(test)]
pub(crate) fn test_python(arch: &str) -> PythonInfo {
    PythonInfo {
        interpreter: "/usr/bin/python3.11".into(),
        version: (3, 11, 2),
        abi_tag: "cp311".into(),
        soabi: format!("cpython-311-{arch}-linux-gnu"),
        free_threaded: false,
        libc: super::interpreter::Libc::Glibc {
            major: 2,
            minor: 36,
        },
        arch: arch.into(),
        prefix: "/usr".into(),
        externally_managed: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_311_arm() -> MarkerEnv {
        MarkerEnv::for_target(&test_python("aarch64")).unwrap()
    }

    #[test]
    fn a_non_ascii_marker_is_refused_not_a_panic() {
        // pep508_rs 0.9 slices inside the `ݣ`; found by the `lock` fuzz target.
        let env = env_311_arm();
        for marker in ["python_version >= \"3.8\"\u{763}", "os_name == 'é'"] {
            assert!(matches!(
                env.evaluate(marker, &[]),
                Err(MarkerError::NonAscii { .. })
            ));
        }
    }

    #[test]
    fn markers_see_the_target_not_the_host() {
        let env = env_311_arm();
        let t = |m: &str| env.evaluate(m, &[]).unwrap();
        assert!(t(
            "sys_platform == 'linux' and platform_system == 'Linux' and os_name == 'posix'"
        ));
        assert!(t("platform_machine == 'aarch64'"));
        assert!(!t("platform_machine == 'x86_64'"));
        assert!(t(
            "python_version == '3.11' and python_full_version >= '3.11.2'"
        ));
        assert!(!t("python_full_version < '3.11.1'"));
        assert!(t(
            "implementation_name == 'cpython' and platform_python_implementation != 'PyPy'"
        ));
        assert!(!t("sys_platform == 'win32'"));
        assert!(t(""));
    }

    #[test]
    fn extras_activate_extra_markers() {
        let env = env_311_arm();
        assert!(!env.evaluate("extra == 'standard'", &[]).unwrap());
        assert!(env
            .evaluate("extra == 'standard'", &["standard".into()])
            .unwrap());
    }

    #[test]
    fn bad_markers_are_errors_naming_the_text() {
        let err = env_311_arm()
            .evaluate("python_version >>> '3'", &[])
            .unwrap_err();
        assert!(err.to_string().contains("python_version >>> '3'"), "{err}");
    }

    #[test]
    fn requires_python_uses_the_full_version() {
        let env = env_311_arm();
        assert!(env.satisfies_requires_python(">=3.9").unwrap());
        assert!(!env.satisfies_requires_python(">=3.12").unwrap());
        assert!(!env.satisfies_requires_python(">=3.11.3").unwrap());
        assert!(env.satisfies_requires_python("").unwrap());
        assert!(env.satisfies_requires_python("not a spec").is_err());
    }
}
