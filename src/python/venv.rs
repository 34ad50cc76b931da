//! The virtualenv skeleton, laid out file for file as `uv venv` 0.13.9 lays it
//! out, but written as a `LayerPlan` so no Python has to run.
//!
//! What `uv venv` creates and what we do with it:
//! - `pyvenv.cfg`, `.gitignore`, `CACHEDIR.TAG`, `bin/python{,3,3.X}`, `lib64 -> lib`
//!   and the empty `lib/python3.X/site-packages/`: reproduced byte for byte.
//! - `bin/activate*`, `bin/deactivate.bat`, `bin/pydoc.bat`: deliberately left out.
//!   They are shell conveniences for interactive use; a container runs the venv's
//!   `bin/` directly (put it on `PATH`), and the Windows `.bat`/`.ps1` files are dead
//!   weight on Linux. Leaving them out keeps this module free of templates.

use crate::layer::{ImagePath, LayerPlan};

/// Written as the `uv = …` line of `pyvenv.cfg`. It names the uv release whose
/// layout we reproduce, so tools that read the key (uv itself, to recognise a venv
/// it may manage) see the venv exactly as `uv venv` 0.13.9 would have left it.
pub const UV_VERSION_FIELD: &str = "0.13.9";

/// uv marks the venv as a cache directory so backup tools skip it.
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VenvTarget {
    /// Where the venv lives in the image, e.g. `app/.venv`.
    pub venv: ImagePath,
    /// The base interpreter, absolute, as the image sees it, e.g. `/usr/bin/python3.11`.
    pub interpreter: String,
    pub version: (u32, u32, u32),
}

#[derive(Debug, thiserror::Error)]
pub enum VenvError {
    #[error("the base interpreter path {0:?} must be absolute and name a file (e.g. /usr/bin/python3.11)")]
    Interpreter(String),
}

impl VenvTarget {
    /// `python3.X`, as used in `lib/` and `include/site/`.
    pub fn python_dir_name(&self) -> String {
        format!("python{}.{}", self.version.0, self.version.1)
    }

    pub fn site_packages(&self) -> ImagePath {
        self.join(&format!("lib/{}/site-packages", self.python_dir_name()))
    }

    pub fn bin(&self) -> ImagePath {
        self.join("bin")
    }

    /// Where `.data/headers` go: uv's venv scheme puts them under `include/site/python3.X/<dist>`.
    pub fn include(&self) -> ImagePath {
        self.join(&format!("include/site/{}", self.python_dir_name()))
    }

    /// Absolute path of the venv's `bin/python`: what shebangs point at.
    pub fn python(&self) -> String {
        self.join("bin/python").absolute()
    }

    fn join(&self, rel: &str) -> ImagePath {
        // `rel` is one of our own constant shapes with no `..`, and the
        // venv is already a valid ImagePath, so the join cannot fail.
        self.venv.join(rel).unwrap_or_else(|_| self.venv.clone())
    }

    /// The directory of the interpreter, as `home =` in pyvenv.cfg.
    fn home(&self) -> &str {
        match self.interpreter.rsplit_once('/') {
            Some(("", _)) | None => "/",
            Some((dir, _)) => dir,
        }
    }

    /// A target whose interpreter is checked to be an absolute path to a file,
    /// which is what `pyvenv.cfg`'s `home` and the `bin/python` link need.
    pub fn new(
        venv: ImagePath,
        interpreter: &str,
        version: (u32, u32, u32),
    ) -> Result<Self, VenvError> {
        match interpreter.rsplit_once('/') {
            Some((_, name)) if interpreter.starts_with('/') && !name.is_empty() => Ok(VenvTarget {
                venv,
                interpreter: interpreter.to_string(),
                version,
            }),
            _ => Err(VenvError::Interpreter(interpreter.to_string())),
        }
    }
}

/// The `pyvenv.cfg` text, line for line as uv writes it (no prompt line).
pub fn pyvenv_cfg(target: &VenvTarget) -> String {
    let (major, minor, patch) = target.version;
    format!(
        "home = {}\nimplementation = CPython\nuv = {UV_VERSION_FIELD}\nversion_info = {major}.{minor}.{patch}\ninclude-system-site-packages = false\n",
        target.home()
    )
}

/// The venv skeleton layer. See the module comment for what is left out.
/// Build the target with [`VenvTarget::new`] to have the interpreter path checked.
pub fn skeleton(target: &VenvTarget) -> LayerPlan {
    let mut plan = LayerPlan::new();
    let cfg = pyvenv_cfg(target);
    let files: [(&str, &[u8]); 3] = [
        (".gitignore", b"*"),
        ("CACHEDIR.TAG", CACHEDIR_TAG.as_bytes()),
        ("pyvenv.cfg", cfg.as_bytes()),
    ];
    let links = [
        ("bin/python".to_string(), target.interpreter.as_str()),
        ("bin/python3".to_string(), "python"),
        (format!("bin/{}", target.python_dir_name()), "python"),
        ("lib64".to_string(), "lib"),
    ];
    // A fresh plan with fixed, distinct paths under one valid venv path: no
    // insertion can collide, so a failure here is a bug in this function.
    const FIXED: &str = "venv skeleton paths are fixed and distinct";
    plan.dir(target.venv.clone(), 0o755).expect(FIXED);
    for (name, bytes) in files {
        plan.bytes(target.join(name), 0o644, bytes.to_vec())
            .expect(FIXED);
    }
    for (name, to) in links {
        plan.symlink(target.join(&name), to).expect(FIXED);
    }
    plan.dir(target.site_packages(), 0o755).expect(FIXED);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Content, EntryKind};

    fn target() -> VenvTarget {
        VenvTarget {
            venv: ImagePath::new("/app/.venv").unwrap(),
            interpreter: "/usr/local/bin/python3.12".into(),
            version: (3, 12, 7),
        }
    }

    fn bytes_of(plan: &LayerPlan, path: &str) -> Vec<u8> {
        match &plan.get(&ImagePath::new(path).unwrap()).unwrap().kind {
            EntryKind::File {
                content: Content::Bytes(b),
                ..
            } => b.clone(),
            other => panic!("{path} is {other:?}"),
        }
    }

    fn link_of(plan: &LayerPlan, path: &str) -> String {
        match &plan.get(&ImagePath::new(path).unwrap()).unwrap().kind {
            EntryKind::Symlink { target } => target.clone(),
            other => panic!("{path} is {other:?}"),
        }
    }

    #[test]
    fn paths_follow_the_venv_scheme() {
        let t = target();
        assert_eq!(
            t.site_packages().as_str(),
            "app/.venv/lib/python3.12/site-packages"
        );
        assert_eq!(t.bin().as_str(), "app/.venv/bin");
        assert_eq!(t.include().as_str(), "app/.venv/include/site/python3.12");
        assert_eq!(t.python(), "/app/.venv/bin/python");
    }

    #[test]
    fn pyvenv_cfg_is_what_uv_writes() {
        let plan = skeleton(&target());
        assert_eq!(
            String::from_utf8(bytes_of(&plan, "app/.venv/pyvenv.cfg")).unwrap(),
            "home = /usr/local/bin\nimplementation = CPython\nuv = 0.13.9\nversion_info = 3.12.7\ninclude-system-site-packages = false\n"
        );
    }

    #[test]
    fn interpreter_links_chain_to_the_base_python() {
        let plan = skeleton(&target());
        assert_eq!(
            link_of(&plan, "app/.venv/bin/python"),
            "/usr/local/bin/python3.12"
        );
        assert_eq!(link_of(&plan, "app/.venv/bin/python3"), "python");
        assert_eq!(link_of(&plan, "app/.venv/bin/python3.12"), "python");
        assert_eq!(link_of(&plan, "app/.venv/lib64"), "lib");
        assert_eq!(bytes_of(&plan, "app/.venv/.gitignore"), b"*");
        assert!(matches!(
            plan.get(&ImagePath::new("app/.venv/lib/python3.12/site-packages").unwrap())
                .unwrap()
                .kind,
            EntryKind::Dir
        ));
    }

    #[test]
    fn relative_interpreter_is_refused() {
        let venv = ImagePath::new("app/.venv").unwrap();
        assert!(matches!(
            VenvTarget::new(venv.clone(), "python3", (3, 12, 7)),
            Err(VenvError::Interpreter(_))
        ));
        assert!(matches!(
            VenvTarget::new(venv.clone(), "/usr/bin/", (3, 12, 7)),
            Err(VenvError::Interpreter(_))
        ));
        assert_eq!(
            VenvTarget::new(venv, "/usr/bin/python3.12", (3, 12, 7))
                .unwrap()
                .interpreter,
            "/usr/bin/python3.12"
        );
    }
}
