//! The little YAML this module needs: quoting scalars it writes, and finding
//! `imgbuild://PATH` strings in documents it did not write, with their exact
//! place in the text so they can be replaced without touching anything else.

use saphyr_parser::{Event, Parser, ScalarStyle};

/// The scheme of the references `imgbuild resolve` replaces.
pub const SCHEME: &str = "imgbuild://";

/// `s` as a YAML scalar: plain when that reads back as the same string, else
/// double-quoted (JSON's string syntax is YAML's double-quoted style).
pub fn scalar(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string serialises")
    }
}

/// A flow sequence of scalars: `["a", "b"]`.
pub fn flow_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| scalar(s)).collect();
    format!("[{}]", parts.join(", "))
}

/// Conservative: letters, digits and `-_./:@` only, starting with a letter or
/// `/`, no `: ` or ` #`, and not a word YAML 1.1 reads as a bool or null.
fn is_plain_safe(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
        && !s.ends_with(':')
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

/// One `imgbuild://PATH` string found in a YAML stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// 1-based number of the document in its stream.
    pub document: usize,
    /// 1-based line of the scalar.
    pub line: usize,
    /// PATH, after the scheme.
    pub path: String,
    /// Byte range of the scalar in the text, quotes included.
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum YamlError {
    #[error("document {document}: invalid YAML at line {line}, column {column}: {message}")]
    Syntax {
        document: usize,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("document {document}, line {line}: {value:?} is a block scalar; write the imgbuild:// reference as a plain or quoted string")]
    BlockScalar {
        document: usize,
        line: usize,
        value: String,
    },
    #[error("document {document}, line {line}: {value:?} names no directory after imgbuild://; write imgbuild://. for the project here")]
    EmptyPath {
        document: usize,
        line: usize,
        value: String,
    },
}

/// Every string scalar starting with [`SCHEME`], in text order. The whole
/// stream is parsed first, so YAML that does not parse is an error even after
/// the last reference.
pub fn find_refs(text: &str) -> Result<Vec<Found>, YamlError> {
    // The parser counts characters; replacements need bytes.
    let byte_at: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let byte = |chars: usize| byte_at[chars.min(byte_at.len() - 1)];
    let mut out = Vec::new();
    let mut document = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError::Syntax {
            document: document.max(1),
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        match event {
            Event::DocumentStart(_) => document += 1,
            Event::Scalar(value, style, _, _) if value.starts_with(SCHEME) => {
                let line = span.start.line();
                if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                    return Err(YamlError::BlockScalar {
                        document,
                        line,
                        value: value.to_string(),
                    });
                }
                let path = value[SCHEME.len()..].trim().to_string();
                if path.is_empty() {
                    return Err(YamlError::EmptyPath {
                        document,
                        line,
                        value: value.to_string(),
                    });
                }
                let start = byte(span.start.index());
                let end = match style {
                    ScalarStyle::Plain => start + value.len(),
                    _ => byte(span.end.index()),
                };
                out.push(Found {
                    document,
                    line,
                    path,
                    start,
                    end,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `text` with each found scalar replaced by its new value (written as a
/// plain or double-quoted scalar); everything else byte for byte.
pub fn replace(text: &str, found: &[Found], new: impl Fn(&Found) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in found {
        out.push_str(&text[at..f.start]);
        out.push_str(&scalar(&new(f)));
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_that_yaml_would_misread_are_quoted() {
        assert_eq!(scalar("orders"), "orders");
        assert_eq!(scalar("/health"), "/health");
        assert_eq!(scalar("imgbuild://."), "imgbuild://.");
        assert_eq!(
            scalar("127.0.0.1:5000/orders@sha256:ab"),
            "\"127.0.0.1:5000/orders@sha256:ab\""
        );
        assert_eq!(scalar("1"), "\"1\"");
        assert_eq!(scalar("250m"), "\"250m\"");
        assert_eq!(scalar("no"), "\"no\"");
        assert_eq!(scalar("a: b"), "\"a: b\"");
        assert_eq!(scalar("x #y"), "\"x #y\"");
        assert_eq!(scalar(""), "\"\"");
        assert_eq!(
            flow_list(&["python".into(), "-m".into()]),
            "[python, \"-m\"]"
        );
    }

    #[test]
    fn finds_references_in_every_style_and_document() {
        let text = "# top\nimage: imgbuild://.  # the app\n---\na:\n  - 'imgbuild://svc/a'\n  - \"imgbuild://ü/b\"\n  - other\nb: {c: imgbuild://x}\n";
        let found = find_refs(text).unwrap();
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.document, f.line, f.path.as_str(), &text[f.start..f.end]))
            .collect();
        assert_eq!(
            got,
            [
                (1, 2, ".", "imgbuild://."),
                (2, 5, "svc/a", "'imgbuild://svc/a'"),
                (2, 6, "ü/b", "\"imgbuild://ü/b\""),
                (2, 8, "x", "imgbuild://x"),
            ]
        );
        let out = replace(text, &found, |f| {
            let first = if f.path.starts_with('ü') { "7" } else { "r" };
            format!("{first}/{}@sha256:1", f.path.len())
        });
        assert_eq!(
            out,
            "# top\nimage: r/1@sha256:1  # the app\n---\na:\n  - r/5@sha256:1\n  - \"7/4@sha256:1\"\n  - other\nb: {c: r/1@sha256:1}\n"
        );
    }

    #[test]
    fn syntax_errors_name_document_and_line() {
        let err = find_refs("a: imgbuild://.\n---\nb: [unclosed\n").unwrap_err();
        match err {
            YamlError::Syntax { document, line, .. } => assert_eq!((document, line), (2, 4)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn block_scalars_and_empty_paths_are_refused() {
        assert!(matches!(
            find_refs("a: |\n  imgbuild://.\n"),
            Err(YamlError::BlockScalar { document: 1, .. })
        ));
        assert!(matches!(
            find_refs("a: imgbuild://\n"),
            Err(YamlError::EmptyPath { document: 1, .. })
        ));
    }
}
