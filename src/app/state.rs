//! The directories the image's user writes in (its HOME and `writable`),
//! added to the app layer owned by that user. They go in the app layer, the
//! top one, so a directory the source tree also has is the user's in the
//! image, and so they cost no layer of their own.

use super::AppError;
use crate::layer::{EntryKind, ImagePath, LayerPlan};

/// Adds each of `dirs` to `plan` as a directory `owner` owns, replacing the
/// source tree's directory of that name; a file there is an error.
pub fn add_state_dirs(
    plan: &mut LayerPlan,
    dirs: &[ImagePath],
    owner: (u32, u32),
) -> Result<(), AppError> {
    for dir in dirs {
        if let Some(e) = plan.get(dir).filter(|e| e.kind != EntryKind::Dir) {
            let what = match e.kind {
                EntryKind::Symlink { .. } => "a symlink",
                _ => "a file",
            };
            return Err(AppError::StateDirTaken {
                path: dir.to_string(),
                what,
            });
        }
        plan.owned_dir(dir.clone(), owner)
            .map_err(|e| AppError::Plan {
                path: dir.to_string(),
                source: e,
            })?;
    }
    Ok(())
}

/// One warning when some of `dirs` hold files of the source tree: the
/// image has them, but a runtime with a read-only root mounts an empty
/// volume there (the manifests' emptyDir), which hides them.
pub fn warning(plan: &LayerPlan, dirs: &[ImagePath]) -> Option<String> {
    let held: Vec<String> = dirs
        .iter()
        .filter_map(|dir| {
            let files = plan
                .entries()
                .filter(|(p, e)| p != &dir && p.starts_with(dir) && e.kind != EntryKind::Dir)
                .count();
            (files > 0).then(|| format!("{dir} ({files})"))
        })
        .collect();
    (!held.is_empty()).then(|| {
        format!(
            "writable directories holding files of the source tree: {}; the image has them, but where the root is read-only (`imgbuild manifests`) an empty volume is mounted there and hides them: keep what ships with the code elsewhere, or copy it in at start",
            held.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Content;

    fn path(p: &str) -> ImagePath {
        ImagePath::new(p).unwrap()
    }

    #[test]
    fn state_dirs_replace_source_dirs_and_refuse_files() {
        let mut plan = LayerPlan::new();
        plan.bytes(path("app/logs/.gitkeep"), 0o644, Vec::new())
            .unwrap();
        plan.bytes(path("app/main.py"), 0o644, Vec::new()).unwrap();
        let dirs = [path("home/app"), path("app/logs"), path("var/lib/api")];
        assert_eq!(
            warning(&plan, &dirs).unwrap().split(';').next().unwrap(),
            "writable directories holding files of the source tree: /app/logs (1)"
        );
        add_state_dirs(&mut plan, &dirs, (65532, 65532)).unwrap();
        for d in &dirs {
            assert_eq!(plan.get(d).unwrap().owner, (65532, 65532), "{d}");
        }
        assert_eq!(plan.get(&path("app")).unwrap().owner, (0, 0));
        assert_eq!(plan.get(&path("var/lib")).unwrap().owner, (0, 0));
        assert!(plan.get(&path("app/logs/.gitkeep")).is_some());
        assert_eq!(warning(&plan, &[path("home/app")]), None);

        plan.file(path("app/data"), 0o644, 0, Content::Bytes(Vec::new()))
            .unwrap();
        let e = add_state_dirs(&mut plan, &[path("app/data")], (1, 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "writable: /app/data is a file in the source tree, where the image needs a directory the user can write in; rename it, or name another directory"
        );
    }
}
