//! `_sysconfigdata_*.py`: the few `build_time_vars` imgbuild needs (VERSION,
//! SOABI, MULTIARCH, Py_GIL_DISABLED), scanned from the Python dict literal
//! without running Python.

use super::{parse_minor, InterpreterError};
use crate::python::rootfs::RootFs;

pub(super) fn find_sysconfigdata(rootfs: &RootFs, lib_dir: &str) -> Option<(String, String)> {
    let mut names: Vec<String> = rootfs
        .list_dir(lib_dir)
        .into_iter()
        .filter(|n| n.starts_with("_sysconfigdata_") && n.ends_with(".py"))
        .collect();
    // Debug builds (`_sysconfigdata_d_…`) describe another ABI.
    names.sort_by_key(|n| (n.starts_with("_sysconfigdata_d"), n.clone()));
    names.into_iter().find_map(|name| {
        let file = format!("{lib_dir}/{name}");
        let text = String::from_utf8_lossy(rootfs.read(&file)?).into_owned();
        Some((format!("/{file}"), text))
    })
}

/// The few `build_time_vars` we need from `_sysconfigdata_*.py`.
#[derive(Debug, Default, PartialEq)]
pub(super) struct SysconfigVars {
    pub version: Option<(u32, u32)>,
    pub soabi: Option<String>,
    pub multiarch: Option<String>,
    pub gil_disabled: bool,
}

impl SysconfigVars {
    pub fn parse(file: &str, text: &str) -> Result<Self, InterpreterError> {
        let version = match dict_value(text, "VERSION") {
            Some(PyValue::Str(v)) => Some(parse_minor(&format!("python{v}")).ok_or_else(|| {
                InterpreterError::Malformed {
                    file: file.to_owned(),
                    reason: format!("VERSION is {v:?}, expected 3.X"),
                }
            })?),
            _ => None,
        };
        let string = |key| match dict_value(text, key) {
            Some(PyValue::Str(s)) if !s.is_empty() => Some(s),
            _ => None,
        };
        Ok(Self {
            version,
            soabi: string("SOABI"),
            multiarch: string("MULTIARCH"),
            gil_disabled: matches!(dict_value(text, "Py_GIL_DISABLED"), Some(PyValue::Int(n)) if n != 0),
        })
    }
}

#[derive(Debug, PartialEq)]
enum PyValue {
    Str(String),
    Int(i64),
}

/// Reads `'KEY': value` from a Python dict literal: a string (implicitly
/// concatenated, possibly in parentheses) or an integer. Anything else is None.
fn dict_value(text: &str, key: &str) -> Option<PyValue> {
    for quote in ['\'', '"'] {
        let needle = format!("{quote}{key}{quote}");
        let mut from = 0;
        while let Some(pos) = text[from..].find(&needle) {
            let after = from + pos + needle.len();
            from = after;
            let rest = text[after..].trim_start();
            if let Some(value) = rest.strip_prefix(':') {
                return parse_py_value(value);
            }
        }
    }
    None
}

fn parse_py_value(text: &str) -> Option<PyValue> {
    let mut rest = text.trim_start();
    let parenthesised = rest.starts_with('(');
    if parenthesised {
        rest = rest[1..].trim_start();
    }
    if rest.starts_with(['\'', '"']) {
        let mut out = String::new();
        while let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
            let (s, after) = parse_py_string(&rest[1..], q)?;
            out.push_str(&s);
            rest = after.trim_start();
            if !parenthesised && !rest.starts_with(['\'', '"']) {
                break;
            }
        }
        return Some(PyValue::Str(out));
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok().map(PyValue::Int)
}

/// A string body after its opening quote: the decoded text and what follows the closing quote.
fn parse_py_string(text: &str, quote: char) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, e) = chars.next()?;
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
            }
            c if c == quote => return Some((out, &text[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::test_images::sysconfigdata;
    use super::*;

    #[test]
    fn sysconfig_scanner_reads_strings_ints_and_concatenations() {
        let text = sysconfigdata("3.12", "cpython-312-x86_64-linux-gnu", "x86_64-linux-gnu");
        assert_eq!(
            dict_value(&text, "SOABI"),
            Some(PyValue::Str("cpython-312-x86_64-linux-gnu".into()))
        );
        assert_eq!(dict_value(&text, "Py_GIL_DISABLED"), Some(PyValue::Int(0)));
        assert_eq!(
            dict_value(&text, "CONFIG_ARGS"),
            Some(PyValue::Str("'--enable-shared' '--with-lto'".into()))
        );
        assert_eq!(
            dict_value(&text, "ABIFLAGS"),
            Some(PyValue::Str(String::new()))
        );
        assert_eq!(dict_value(&text, "MISSING"), None);
        let paren = "{'LDFLAGS': ('-L/usr/lib '\n '-Wl,-z'),\n 'X': 1}";
        assert_eq!(
            dict_value(paren, "LDFLAGS"),
            Some(PyValue::Str("-L/usr/lib -Wl,-z".into()))
        );
    }
}
