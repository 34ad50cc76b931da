//! The `bytecode` setting's value. It lives with the settings, not with the
//! code that compiles, so reading a spec does not depend on running Python:
//! [`crate::python::bytecode`] consumes it.

/// The `bytecode` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BytecodeMode {
    /// No pycs: every process compiles what it imports.
    Off,
    /// Hash-based pycs whose source hash Python checks at import (the default).
    #[default]
    CheckedHash,
    /// Hash-based pycs Python trusts without reading the source.
    UncheckedHash,
}

impl BytecodeMode {
    /// From the spec's value: `true`, `false`, `"checked-hash"` or `"unchecked-hash"`.
    pub fn from_setting(value: &toml::Value) -> Option<BytecodeMode> {
        match value {
            toml::Value::Boolean(true) => Some(BytecodeMode::CheckedHash),
            toml::Value::Boolean(false) => Some(BytecodeMode::Off),
            toml::Value::String(s) if s == "checked-hash" => Some(BytecodeMode::CheckedHash),
            toml::Value::String(s) if s == "unchecked-hash" => Some(BytecodeMode::UncheckedHash),
            _ => None,
        }
    }

    /// `py_compile`'s invalidation mode, and the part of a layer's cache key.
    pub fn invalidation(self) -> &'static str {
        match self {
            BytecodeMode::Off => "off",
            BytecodeMode::CheckedHash => "checked-hash",
            BytecodeMode::UncheckedHash => "unchecked-hash",
        }
    }

    /// The value as a setting that reads back as this mode: `false`, or the
    /// mode's name (what provenance records).
    pub fn to_setting(self) -> toml::Value {
        match self {
            BytecodeMode::Off => toml::Value::Boolean(false),
            mode => toml::Value::String(mode.invalidation().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BytecodeMode as Mode;

    #[test]
    fn the_setting_takes_booleans_and_the_two_hash_modes() {
        let v = |s: &str| -> toml::Value {
            toml::from_str::<toml::Table>(&format!("v = {s}")).unwrap()["v"].clone()
        };
        assert_eq!(Mode::from_setting(&v("true")), Some(Mode::CheckedHash));
        assert_eq!(Mode::from_setting(&v("false")), Some(Mode::Off));
        assert_eq!(
            Mode::from_setting(&v("\"unchecked-hash\"")),
            Some(Mode::UncheckedHash)
        );
        assert_eq!(
            Mode::from_setting(&v("\"checked-hash\"")),
            Some(Mode::CheckedHash)
        );
        assert_eq!(Mode::from_setting(&v("\"timestamp\"")), None);
        assert_eq!(Mode::from_setting(&v("1")), None);
        assert_eq!(Mode::default(), Mode::CheckedHash);
    }

    #[test]
    fn each_mode_reads_back_from_the_setting_it_is_written_as() {
        for mode in [Mode::Off, Mode::CheckedHash, Mode::UncheckedHash] {
            assert_eq!(Mode::from_setting(&mode.to_setting()), Some(mode));
        }
    }
}
