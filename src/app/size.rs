//! One line when the app layer is large: a data set, a model or an old
//! build checked into the tree is the usual cause, and the line names where
//! the bytes are so it can be left out with `.dockerignore` or `exclude`.

use crate::layer::{EntryKind, ImagePath, LayerPlan};
use crate::text::human;
use std::collections::BTreeMap;

/// Above this many bytes of files (before compression, pycs not counted),
/// the build says what is largest (docs/configuration.md, "The app layer").
pub const LARGE_APP_LAYER: u64 = 50 << 20;

/// How many entries the line names.
const SHOWN: usize = 3;

/// The warning for a plan over [`LARGE_APP_LAYER`], or `None`.
pub fn warning(plan: &LayerPlan, workdir: &ImagePath) -> Option<String> {
    let total = plan.content_size();
    if total <= LARGE_APP_LAYER {
        return None;
    }
    let largest = largest_entries(plan, workdir)
        .into_iter()
        .map(|(path, size)| format!("{path} {}", human(size)))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "the app layer holds {} of files (over {}); largest: {largest}; leave out what the service does not need with .dockerignore or `exclude`",
        human(total),
        human(LARGE_APP_LAYER)
    ))
}

/// The [`SHOWN`] largest entries below `workdir`, as paths relative to it
/// (directories with a trailing `/`, their files summed), largest first.
/// It starts from the top level and opens a directory that holds more than
/// half the bytes, so `src/ 60 MiB` becomes the data file inside it.
fn largest_entries(plan: &LayerPlan, workdir: &ImagePath) -> Vec<(String, u64)> {
    // Every file's size added to itself and each directory above it.
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let prefix = format!("{}/", workdir.as_str());
    for (path, entry) in plan.entries() {
        let EntryKind::File { size, .. } = entry.kind else {
            continue;
        };
        let Some(rel) = path.as_str().strip_prefix(&prefix) else {
            continue;
        };
        *sizes.entry(rel.to_string()).or_default() += size;
        for (i, _) in rel.match_indices('/') {
            *sizes.entry(format!("{}/", &rel[..i])).or_default() += size;
        }
    }
    let total: u64 = plan.content_size();
    let children = |dir: &str| -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = sizes
            .iter()
            .filter(|(p, _)| {
                let Some(rest) = p.strip_prefix(dir) else {
                    return false;
                };
                let rest = rest.strip_suffix('/').unwrap_or(rest);
                !rest.is_empty() && !rest.contains('/')
            })
            .map(|(p, s)| (p.clone(), *s))
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    };
    let mut level = children("");
    while let Some((dir, size)) = level.first().cloned() {
        if !dir.ends_with('/') || size * 2 <= total {
            break;
        }
        let inner = children(&dir);
        if inner.is_empty() {
            break;
        }
        level.splice(0..1, inner);
        level.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    level.truncate(SHOWN);
    level
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Content;

    fn plan(files: &[(&str, u64)]) -> LayerPlan {
        let mut plan = LayerPlan::new();
        plan.dir(ImagePath::new("app").unwrap(), 0o755).unwrap();
        for (p, size) in files {
            plan.file(
                ImagePath::new(&format!("app/{p}")).unwrap(),
                0o644,
                *size,
                Content::Bytes(Vec::new()),
            )
            .unwrap();
        }
        plan
    }

    #[test]
    fn a_small_layer_says_nothing() {
        let app = ImagePath::new("app").unwrap();
        assert_eq!(warning(&plan(&[("main.py", 10 << 20)]), &app), None);
        assert_eq!(warning(&plan(&[("main.py", LARGE_APP_LAYER)]), &app), None);
    }

    #[test]
    fn a_large_layer_names_its_largest_entries_opening_the_dominant_directory() {
        let app = ImagePath::new("app").unwrap();
        let p = plan(&[
            ("main.py", 1 << 10),
            ("data/model.bin", 40 << 20),
            ("data/extra/vocab.txt", 30 << 20),
            ("data/extra/small.txt", 1 << 20),
            ("svc.tar", 20 << 20),
            ("docs/a.md", 2 << 20),
        ]);
        assert_eq!(
            largest_entries(&p, &app),
            [
                ("data/model.bin".to_string(), 40 << 20),
                ("data/extra/".to_string(), 31 << 20),
                ("svc.tar".to_string(), 20 << 20),
            ]
        );
        let w = warning(&p, &app).unwrap();
        assert!(
            w.starts_with("the app layer holds 93.0 MiB of files (over 50.0 MiB); largest: data/model.bin 40.0 MiB, data/extra/ 31.0 MiB, svc.tar 20.0 MiB; "),
            "{w}"
        );
    }
}
