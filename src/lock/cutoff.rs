//! The date a lock was made as of (issue 22): what an sdist's build
//! requirements are chosen by.

use std::path::Path;

/// The date a lock was made as of, for choosing an sdist's build
/// requirements (issue 22): uv.lock's `[options] exclude-newer`, else the
/// newest `upload-time` among the files of a uv.lock or pylock.toml; None for
/// formats that record neither, and for a file that cannot be read.
pub fn build_cutoff(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name != "uv.lock" && !super::is_pylock_name(name) {
        return None;
    }
    let doc: toml::Table = toml::from_str(&super::read_text(path).ok()?).ok()?;
    let exclude_newer = doc
        .get("options")
        .and_then(|o| o.get("exclude-newer"))
        .and_then(toml::Value::as_str);
    if let Some(date) = exclude_newer {
        return Some(date.to_owned());
    }
    fn newest(v: &toml::Value, best: &mut Option<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let time = match (k.as_str(), v) {
                        ("upload-time", toml::Value::String(s)) => s.clone(),
                        ("upload-time", toml::Value::Datetime(d)) => d.to_string(),
                        _ => {
                            newest(v, best);
                            continue;
                        }
                    };
                    if best.as_deref().is_none_or(|b| time.as_str() > b) {
                        *best = Some(time);
                    }
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|i| newest(i, best)),
            _ => {}
        }
    }
    let mut best = None;
    newest(&toml::Value::Table(doc), &mut best);
    best
}
