//! The directories the image's user writes in (issue 23): its HOME and the
//! `writable` ones, checked so that none would put an empty volume over
//! the code, the venv or the base's system files.

use super::values::SYSTEM_DIRS;
use super::{Origin, SpecError};
use crate::layer::ImagePath;
use std::collections::BTreeMap;

/// `writable`: each entry absolute, or relative to the workdir; none where
/// an empty volume would hide the code, the venv or the system (an emptyDir
/// hides what the image has at its path), nor `/tmp`, writable already.
pub(super) fn writable(
    origin: &Origin,
    entries: Vec<String>,
    workdir: &ImagePath,
    venv: &ImagePath,
    env: &BTreeMap<String, String>,
) -> Result<Vec<ImagePath>, SpecError> {
    let home = (!env.contains_key("HOME")).then(|| ImagePath::new(super::HOME).expect("valid"));
    if let Some(h) = home
        .as_ref()
        .filter(|h| workdir.starts_with(h) || venv.starts_with(h))
    {
        return Err(origin.invalid("workdir", format!("{workdir} (or the venv) lies in {h}, the user's HOME, which must be writable; use another workdir, or set `env = {{ HOME = \"/some/dir\" }}`")));
    }
    let mut out: Vec<ImagePath> = Vec::new();
    for entry in entries {
        let bad = |why: String| origin.invalid("writable", format!("{entry:?} {why}"));
        let path = if entry.starts_with('/') {
            ImagePath::new(&entry)
        } else {
            workdir.join(&entry)
        }
        .map_err(|e| bad(e.1.to_string()))?;
        let top = path.as_str().split('/').next().unwrap_or_default();
        let depth = path.as_str().split('/').count();
        if workdir.starts_with(&path) || venv.starts_with(&path) {
            return Err(bad(format!("would be a volume over the code in {workdir} (or the venv {venv}), which an empty volume hides; name a directory inside it, such as \"data\", and point the app there")));
        }
        if path.starts_with(venv) {
            return Err(bad(format!("is inside the venv {venv}")));
        }
        if top == "tmp" {
            return Err(bad(
                "is writable in every image already (a tmpfs or emptyDir at /tmp); leave it out"
                    .into(),
            ));
        }
        // Under /var a directory of its own is fine (/var/lib/app); the rest
        // of the system directories, and /var/lib itself, are the base's.
        if SYSTEM_DIRS.contains(&top) && !(top == "var" && depth >= 3) {
            return Err(bad(format!("is a system directory of the base; use one of the app's own, such as \"/var/lib/app\" or a directory under {workdir}")));
        }
        if home.as_ref() == Some(&path) {
            return Err(bad(
                "is the user's HOME, writable already; leave it out".into()
            ));
        }
        if out.contains(&path) {
            return Err(bad(format!("names {path}, listed already")));
        }
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Project, MINIMAL};
    use super::super::{ImagePath, HOME, SPEC_FILE};

    fn spec_with(extra: &str) -> super::super::Spec {
        let p = Project::new();
        p.write(SPEC_FILE, &format!("{MINIMAL}{extra}"));
        p.load().unwrap()
    }

    #[test]
    fn state_dirs_are_home_and_writable_relative_to_the_workdir() {
        let s = spec_with("");
        assert_eq!(s.home().unwrap().absolute(), "/home/app");
        assert_eq!(s.state_dirs(), [ImagePath::new(HOME).unwrap()]);
        let s = spec_with("writable = [\"logs\", \"/var/lib/app\", \"data/uploads/\"]\n");
        let dirs: Vec<String> = s.state_dirs().iter().map(ImagePath::absolute).collect();
        assert_eq!(
            dirs,
            [
                "/home/app",
                "/app/logs",
                "/var/lib/app",
                "/app/data/uploads"
            ]
        );
        // A HOME of the user's own is theirs to make writable.
        let s = spec_with("writable = [\"/data\"]\nenv = { HOME = \"/data\" }\n");
        assert_eq!(s.home(), None);
        assert_eq!(s.state_dirs(), [ImagePath::new("/data").unwrap()]);
        let s = spec_with("workdir = \"/srv/api\"\nwritable = [\"state\"]\n");
        assert_eq!(s.writable, [ImagePath::new("/srv/api/state").unwrap()]);
    }

    #[test]
    fn writable_dirs_that_would_hide_code_or_system_files_are_refused() {
        let p = Project::new();
        let cases = [
            ("\".\"", "would be a volume over the code in /app"),
            ("\"/\"", "names the root"),
            ("\"/app\"", "would be a volume over the code in /app"),
            ("\"../etc\"", "contains `..`"),
            ("\".venv/cache\"", "is inside the venv /app/.venv"),
            ("\"/tmp/x\"", "is writable in every image already"),
            ("\"/var/lib\"", "is a system directory of the base"),
            ("\"/etc/app\"", "is a system directory of the base"),
            ("\"/home/app\"", "is the user's HOME, writable already"),
            ("\"logs\", \"/app/logs\"", "names /app/logs, listed already"),
        ];
        for (list, why) in cases {
            let e = p.err(&format!("{MINIMAL}writable = [{list}]\n"));
            assert!(
                e.contains("key \"writable\": ") && e.contains(why),
                "{list}: {e}"
            );
        }
        let e = p.err(&format!("{MINIMAL}workdir = \"/home/app/api\"\n"));
        assert!(
            e.contains(
                "key \"workdir\": /home/app/api (or the venv) lies in /home/app, the user's HOME"
            ),
            "{e}"
        );
        p.write(
            SPEC_FILE,
            &format!("{MINIMAL}workdir = \"/home/app/api\"\nenv = {{ HOME = \"/home/app\" }}\n"),
        );
        assert!(p.load().is_ok());
    }
}
