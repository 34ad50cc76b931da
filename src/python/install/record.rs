//! RECORD: read from the wheel, kept in step with the plan, written back.
//!
//! Read and written with the `csv` crate as uv does (RFC 4180 quoting, `\n`
//! line ends, fields quoted only when they hold a comma, quote or line break),
//! so the bytes match `uv pip install`'s.

use super::{Ctx, WheelError};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The shape of one line of RECORD. Field order gives uv's sort order
/// (path, then hash, then size, with a missing value first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RecordRow {
    pub path: String,
    pub hash: Option<String>,
    pub size: Option<u64>,
}

/// RECORD as CSV: path, hash, size; a leading `/` is dropped as uv does.
/// Rows may have fewer or more fields; blank lines are skipped.
pub(super) fn parse_record(text: &[u8], ctx: &Ctx) -> Result<Vec<RecordRow>, WheelError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text);
    let mut rows = Vec::new();
    for fields in reader.byte_records() {
        let fields = fields.map_err(|source| ctx.record(source))?;
        let get = |i: usize| {
            fields
                .get(i)
                .filter(|f| !f.is_empty())
                .map(|f| String::from_utf8_lossy(f).into_owned())
        };
        let size = match get(2) {
            Some(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| ctx.invalid(format!("RECORD: size {s:?} is not a number")))?,
            ),
            None => None,
        };
        let path = get(0)
            .map(|p| p.trim_start_matches('/').to_string())
            .unwrap_or_default();
        rows.push(RecordRow {
            path,
            hash: get(1),
            size,
        });
    }
    Ok(rows)
}

/// RECORD text as uv's csv writer produces it.
pub(crate) fn write_record(rows: &[RecordRow]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    for row in rows {
        let size = row.size.map(|s| s.to_string()).unwrap_or_default();
        writer
            .write_record([
                row.path.as_str(),
                row.hash.as_deref().unwrap_or(""),
                size.as_str(),
            ])
            .expect("writing CSV to memory cannot fail");
    }
    writer
        .into_inner()
        .expect("flushing CSV to memory cannot fail")
}

/// `sha256=<urlsafe base64, no padding>`, as RECORD spells hashes.
pub(crate) fn record_hash(bytes: &[u8]) -> String {
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
    )
}

/// RECORD is enforced as pip and uv do: every file in the archive is listed
/// with a hash (except RECORD itself and its `.jws`/`.p7s` signatures), and
/// every listed file is in the archive. The hashes are checked as the files
/// stream into the layer ([`super::WheelContent`]).
pub(super) fn check_record_covers(
    rows: &[RecordRow],
    files: &[&str],
    dist_info: &str,
    ctx: &Ctx,
) -> Result<(), WheelError> {
    let exempt = |name: &str| {
        name.strip_prefix(dist_info)
            .and_then(|rest| rest.strip_prefix(".dist-info/"))
            .is_some_and(|f| matches!(f, "RECORD" | "RECORD.jws" | "RECORD.p7s"))
    };
    let mut listed = std::collections::HashMap::new();
    for row in rows {
        listed
            .entry(normalise_record_path(&row.path))
            .or_insert(row.hash.is_some());
    }
    let in_archive: std::collections::HashSet<&str> = files.iter().copied().collect();
    for &name in files {
        if exempt(name) {
            continue;
        }
        match listed.get(name) {
            None => return Err(ctx.record_mismatch(name, "is in the archive but not in RECORD")),
            Some(false) => return Err(ctx.record_mismatch(name, "has no hash in RECORD")),
            Some(true) => {}
        }
    }
    for row in rows {
        let name = normalise_record_path(&row.path);
        if !name.is_empty() && !exempt(&name) && !in_archive.contains(name.as_str()) {
            return Err(ctx.record_mismatch(&name, "is listed in RECORD but not in the archive"));
        }
    }
    Ok(())
}

/// A RECORD path compared as an archive entry name: no `.` or empty components.
pub(super) fn normalise_record_path(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::super::test_ctx as ctx;
    use super::*;

    #[test]
    fn record_round_trips_with_quoting_and_uv_order() {
        let text =
            "b.py,sha256=x,3\n\"a,b.py\",sha256=y,1\r\npkg-1.dist-info/RECORD,,\n/abs.py,,\n";
        let mut rows = parse_record(text.as_bytes(), &ctx()).unwrap();
        assert_eq!(rows[1].path, "a,b.py");
        assert_eq!(rows[3].path, "abs.py");
        rows.sort();
        assert_eq!(
            String::from_utf8(write_record(&rows)).unwrap(),
            "\"a,b.py\",sha256=y,1\nabs.py,,\nb.py,sha256=x,3\npkg-1.dist-info/RECORD,,\n"
        );
        assert!(parse_record(b"a,sha256=x,big\n", &ctx()).is_err());
    }

    fn rows(text: &str) -> Vec<RecordRow> {
        parse_record(text.as_bytes(), &ctx()).unwrap()
    }

    #[test]
    fn record_must_list_every_file_with_a_hash_and_nothing_more() {
        let record = "pkg/__init__.py,sha256=x,1\ndemo-1.0.dist-info/RECORD,,\n";
        let files = ["pkg/__init__.py", "demo-1.0.dist-info/RECORD"];
        let covers = |record: &str, members: &[&str]| {
            check_record_covers(&rows(record), members, "demo-1.0", &ctx())
                .map_err(|e| e.to_string())
        };
        covers(record, &files).unwrap();
        // Signatures of RECORD need no row of their own.
        let signed = [&files[..], &["demo-1.0.dist-info/RECORD.jws"]].concat();
        covers(record, &signed).unwrap();

        let unhashed = "pkg/__init__.py,,\ndemo-1.0.dist-info/RECORD,,\n";
        let refused: [(&str, &[&str], &[&str]); 3] = [
            // A member renamed inside the archive: listed one is missing, the new one unlisted.
            (
                record,
                &["pkg/__init__.px", "demo-1.0.dist-info/RECORD"],
                &["demo-1.0-py3-none-any.whl", "pkg/__init__.px"],
            ),
            (
                record,
                &["demo-1.0.dist-info/RECORD"],
                &["pkg/__init__.py", "not in the archive"],
            ),
            (unhashed, &files, &["no hash"]),
        ];
        for (record, members, says) in refused {
            let err = covers(record, members).unwrap_err();
            for s in says {
                assert!(err.contains(s), "{s:?} not in {err}");
            }
        }
    }

    #[test]
    fn quotes_and_line_breaks_in_paths_are_quoted_when_written() {
        let rows = [RecordRow {
            path: "a\"b\nc.py".into(),
            hash: None,
            size: Some(0),
        }];
        let text = write_record(&rows);
        assert_eq!(text, b"\"a\"\"b\nc.py\",,0\n");
        assert_eq!(parse_record(&text, &ctx()).unwrap(), rows);
    }
}
