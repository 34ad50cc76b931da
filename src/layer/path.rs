//! A path inside the image. Never a host `PathBuf`: it is always relative to
//! the image root, `/`-separated, with no `.`, `..` or empty components.

use std::fmt;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImagePath(String);

#[derive(Debug, thiserror::Error)]
#[error("invalid path in image {0:?}: {1}")]
pub struct InvalidImagePath(pub String, pub &'static str);

impl ImagePath {
    /// Accepts `/app/x`, `app/x` and `app/x/`; refuses `..`, NUL and empty paths.
    pub fn new(p: &str) -> Result<Self, InvalidImagePath> {
        if p.contains('\0') {
            return Err(InvalidImagePath(p.into(), "contains NUL"));
        }
        let mut parts = Vec::new();
        for c in p.split('/') {
            match c {
                "" | "." => {}
                ".." => return Err(InvalidImagePath(p.into(), "contains `..`")),
                c => parts.push(c),
            }
        }
        if parts.is_empty() {
            return Err(InvalidImagePath(p.into(), "names the root"));
        }
        Ok(ImagePath(parts.join("/")))
    }

    pub fn join(&self, rel: &str) -> Result<Self, InvalidImagePath> {
        ImagePath::new(&format!("{}/{}", self.0, rel))
    }

    /// Without the leading `/`, as tar entries carry it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// With the leading `/`, as the image's processes see it.
    pub fn absolute(&self) -> String {
        format!("/{}", self.0)
    }

    pub fn parent(&self) -> Option<ImagePath> {
        self.0
            .rfind('/')
            .map(|i| ImagePath(self.0[..i].to_string()))
    }

    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// Every ancestor, outermost first.
    pub fn ancestors(&self) -> Vec<ImagePath> {
        let mut out = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }

    pub fn starts_with(&self, other: &ImagePath) -> bool {
        self.0 == other.0 || self.0.starts_with(&format!("{}/", other.0))
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

impl fmt::Debug for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// An absolute path in the image resolved lexically, as the kernel walks it
/// when no component is a symbolic link: empty and `.` components dropped,
/// `..` going up one and stopping at `/`. `usr/./bin/../lib/` → `/usr/lib`.
pub fn clean_absolute(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_absolute_resolves_dots_and_stops_at_the_root() {
        for (path, clean) in [
            ("usr/./bin/../lib/", "/usr/lib"),
            ("/../../etc//passwd", "/etc/passwd"),
            ("/a/..", "/"),
            ("", "/"),
        ] {
            assert_eq!(clean_absolute(path), clean, "{path}");
        }
    }

    #[test]
    fn normalises_and_refuses_escapes() {
        assert_eq!(ImagePath::new("/app//x/./y/").unwrap().as_str(), "app/x/y");
        assert!(ImagePath::new("/app/../etc").is_err());
        assert!(ImagePath::new("/").is_err());
        let p = ImagePath::new("a/b/c").unwrap();
        assert_eq!(
            p.ancestors(),
            vec![ImagePath::new("a").unwrap(), ImagePath::new("a/b").unwrap()]
        );
        assert!(p.starts_with(&ImagePath::new("a/b").unwrap()));
        assert!(!ImagePath::new("a/bc")
            .unwrap()
            .starts_with(&ImagePath::new("a/b").unwrap()));
    }
}
