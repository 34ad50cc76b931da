//! A read-only snapshot of a base image's filesystem, rebuilt from its layers'
//! uncompressed tar streams with OCI whiteouts, so the base's Python can be read
//! from its files without unpacking anything to disk.
//!
//! Only the metadata of every entry is kept; file contents are kept in memory
//! only for the paths a caller asks for (see [`RootFs::python_relevant`]).

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use thiserror::Error;

/// ELF binaries are only read for their headers (PT_INTERP, e_machine): the
/// program headers sit at the start of the file.
const ELF_PREFIX: usize = 64 * 1024;
/// Upper bound for any kept file, so a hostile layer cannot exhaust memory.
const MAX_KEPT: u64 = 16 * 1024 * 1024;
/// Linux gives up after 40 symlinks; so do we.
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, Error)]
pub enum RootFsError {
    #[error(
        "reading a base image layer failed; the layer blob may be corrupt, pull the base again"
    )]
    Tar(#[source] std::io::Error),
    #[error("reading `{path}` from a base image layer failed")]
    Entry {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File {
        size: u64,
        mode: u32,
        /// The kept prefix of the contents (all of it unless the file is a large ELF).
        data: Option<Vec<u8>>,
    },
    Symlink(String),
}

/// What a filesystem already has at a path where a directory of ours would go
/// ([`RootFs::occupant`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Occupant {
    /// A file (or a hard link to one).
    File,
    /// A symlink, with its target.
    Symlink(String),
    /// A directory with entries: one of them (a file or link when there is
    /// one), as an absolute path below the path asked about.
    Entries(String),
}

/// Decides what a regular file keeps: `keep(path, size, contents)`.
pub type KeepFn<'a> = dyn FnMut(&str, u64, &mut dyn Read) -> std::io::Result<Option<Vec<u8>>> + 'a;

/// The merged view of a base image's layers.
#[derive(Clone, Debug, Default)]
pub struct RootFs {
    nodes: BTreeMap<String, Node>,
}

impl RootFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one layer on top of the ones applied before it.
    /// `keep(path)` decides whether a regular file's contents are kept in memory.
    pub fn apply_layer(
        &mut self,
        tar: impl Read,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<(), RootFsError> {
        self.apply_layer_with(tar, &mut |path, size, r| {
            if keep(path) {
                read_kept(r, size, path).map(Some)
            } else {
                Ok(None)
            }
        })
    }

    /// [`RootFs::apply_layer`], with `keep(path, size, contents)` deciding what
    /// a regular file keeps: its contents, a digest of them, or nothing.
    pub fn apply_layer_with(
        &mut self,
        tar: impl Read,
        keep: &mut KeepFn,
    ) -> Result<(), RootFsError> {
        let mut archive = tar::Archive::new(tar);
        // Entries added by this layer survive an opaque whiteout in the same layer.
        let mut added: HashSet<String> = HashSet::new();
        for entry in archive.entries().map_err(RootFsError::Tar)? {
            let mut entry = entry.map_err(RootFsError::Tar)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = normalise(&raw) else {
                continue;
            };
            // Like containerd, parents are resolved inside the root: with
            // `lib -> usr/lib` below, `lib/x` lands in `usr/lib/x`.
            let (dir, name) = split_parent(&path);
            let dir = self
                .resolve(dir)
                .filter(|real| self.nodes.get(real) == Some(&Node::Dir))
                .unwrap_or_else(|| dir.to_owned());
            let path = join(&dir, name);
            if name == ".wh..wh..opq" {
                self.remove_children(&dir, &added);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let target = join(&dir, hidden);
                self.remove_tree(&target);
                continue;
            }
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644);
            let node = match header.entry_type() {
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    Node::Symlink(target)
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .and_then(|b| self.hardlink_target(&String::from_utf8_lossy(&b)));
                    match target.and_then(|t| self.nodes.get(&t).cloned()) {
                        Some(node) => node,
                        None => continue,
                    }
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    let data =
                        keep(&path, size, &mut entry).map_err(|source| RootFsError::Entry {
                            path: path.clone(),
                            source,
                        })?;
                    Node::File { size, mode, data }
                }
                _ => continue,
            };
            // A non-directory replacing a directory hides everything below it.
            if node != Node::Dir {
                self.remove_tree(&path);
            }
            self.add_parents(&path);
            added.insert(path.clone());
            self.nodes.insert(path, node);
        }
        Ok(())
    }

    /// Where a hard link's target is in the merged view: its directory
    /// resolved inside the root (`..` at the root stays there, an absolute
    /// path starts at the root, symlinks are followed), as containerd and
    /// `openat2(RESOLVE_IN_ROOT)` resolve it; the name itself is not followed.
    fn hardlink_target(&self, target: &str) -> Option<String> {
        let (dir, name) = split_parent(target);
        if matches!(name, "" | "." | "..") {
            return None;
        }
        Some(join(&self.resolve(dir)?, name))
    }

    /// True for exactly the files interpreter detection reads.
    pub fn python_relevant(path: &str) -> bool {
        let (dir, name) = split_parent(path);
        let parent = split_parent(dir).1;
        let bin_dir = parent == "bin" || parent == "sbin";
        (bin_dir && is_python_name(name))
            || (name.starts_with("_sysconfigdata_") && name.ends_with(".py"))
            || is_libc_name(name)
            || name.starts_with("ld-musl-")
            || name.starts_with("libc.musl-")
            || matches!(
                path,
                "var/lib/dpkg/status"
                    | "lib/apk/db/installed"
                    | "usr/lib/apk/db/installed"
                    | "etc/os-release"
                    | "usr/lib/os-release"
            )
            || (dir == "var/lib/dpkg/status.d" && !name.ends_with(".md5sums"))
            || (name == "EXTERNALLY-MANAGED" && parent.starts_with("python3"))
            || (name == "patchlevel.h" && parent.starts_with("python3"))
    }

    /// The real path (no leading `/`) that `path` names after following every
    /// symlink, or None when it does not exist or loops.
    pub fn resolve(&self, path: &str) -> Option<String> {
        self.resolve_noting_links(path, |_| {})
    }

    /// [`resolve`](Self::resolve), calling `on_link` with the path of every
    /// symlink followed on the way (in the order they are followed).
    pub fn resolve_noting_links(
        &self,
        path: &str,
        mut on_link: impl FnMut(&str),
    ) -> Option<String> {
        let mut pending: Vec<String> = components(path).rev().map(str::to_owned).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(part);
            let here = resolved.join("/");
            match self.nodes.get(&here)? {
                Node::Symlink(target) => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return None;
                    }
                    on_link(&here);
                    resolved.pop();
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    pending.extend(components(target).rev().map(str::to_owned));
                }
                Node::File { .. } if !pending.is_empty() => return None,
                _ => {}
            }
        }
        Some(resolved.join("/"))
    }

    /// The kept contents of the file at `path` (symlinks followed). None when
    /// the file is missing, is not a regular file, or its contents were not kept.
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        match self.nodes.get(&self.resolve(path)?)? {
            Node::File {
                data: Some(data), ..
            } => Some(data),
            _ => None,
        }
    }

    /// The full size of the regular file at `path` (symlinks followed).
    pub fn file_size(&self, path: &str) -> Option<u64> {
        match self.nodes.get(&self.resolve(path)?)? {
            Node::File { size, .. } => Some(*size),
            _ => None,
        }
    }

    /// The target of the symlink at exactly `path` (no symlinks followed).
    pub fn read_link(&self, path: &str) -> Option<&str> {
        match self.nodes.get(path)? {
            Node::Symlink(target) => Some(target),
            _ => None,
        }
    }

    /// The mode bits of the regular file at `path` (symlinks followed).
    pub fn file_mode(&self, path: &str) -> Option<u32> {
        match self.nodes.get(&self.resolve(path)?)? {
            Node::File { mode, .. } => Some(*mode),
            _ => None,
        }
    }

    pub fn is_file(&self, path: &str) -> bool {
        self.file_size(path).is_some()
    }

    /// The names of the entries directly inside `dir` (symlinks followed), sorted.
    pub fn list_dir(&self, dir: &str) -> Vec<String> {
        let Some(real) = self.resolve(dir) else {
            return Vec::new();
        };
        let prefix = if real.is_empty() {
            String::new()
        } else {
            format!("{real}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter_map(|(p, _)| {
                let rest = &p[prefix.len()..];
                (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_owned())
            })
            .collect()
    }

    /// What is at the absolute `path` unless it is nothing or an empty
    /// directory. Its parent is resolved (symlinks followed, as a layer's
    /// entries below it would be), the last component is not.
    pub fn occupant(&self, path: &str) -> Option<Occupant> {
        let asked = normalise(path)?;
        let (dir, name) = split_parent(&asked);
        let real = join(&self.resolve(dir)?, name);
        match self.nodes.get(&real)? {
            Node::Dir => {}
            Node::File { .. } => return Some(Occupant::File),
            Node::Symlink(target) => return Some(Occupant::Symlink(target.clone())),
        }
        let prefix = format!("{real}/");
        let mut below = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix));
        let (first, _) = below.clone().next()?;
        let shown = below
            .find(|(_, n)| **n != Node::Dir)
            .map_or(first, |(p, _)| p);
        Some(Occupant::Entries(format!(
            "/{asked}/{}",
            &shown[prefix.len()..]
        )))
    }

    pub fn exists(&self, path: &str) -> bool {
        self.resolve(path)
            .is_some_and(|p| p.is_empty() || self.nodes.contains_key(&p))
    }

    /// Every path in the snapshot (not resolved), in sorted order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    fn add_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            end += pos;
            let parent = &path[..end];
            // An existing symlink parent (e.g. /bin -> usr/bin) stays a symlink.
            self.nodes.entry(parent.to_owned()).or_insert(Node::Dir);
            end += 1;
        }
    }

    fn remove_tree(&mut self, path: &str) {
        self.nodes.remove(path);
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.nodes.remove(&p);
        }
    }

    fn remove_children(&mut self, dir: &str, keep: &HashSet<String>) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !keep.contains(*p))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.nodes.remove(&p);
        }
    }
}

fn read_kept(entry: &mut dyn Read, size: u64, path: &str) -> std::io::Result<Vec<u8>> {
    let first = size.min(ELF_PREFIX as u64);
    let mut data = Vec::with_capacity(first as usize);
    (&mut *entry).take(first).read_to_end(&mut data)?;
    // libc is read whole for its version banner; any other ELF only for its headers.
    let headers_only = data.starts_with(b"\x7fELF") && !is_libc_name(split_parent(path).1);
    if size > first && !headers_only {
        entry.take(MAX_KEPT - first).read_to_end(&mut data)?;
    }
    Ok(data)
}

fn is_libc_name(name: &str) -> bool {
    name == "libc.so.6" || (name.starts_with("libc-2.") && name.ends_with(".so"))
}

fn is_python_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("python3") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(minor) = rest.strip_prefix('.') else {
        return false;
    };
    let minor = minor.strip_suffix('t').unwrap_or(minor);
    !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit())
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// `./usr//bin/` → `usr/bin`. None for the root itself and for paths that
/// climb out with `..`.
pub(crate) fn normalise(raw: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in components(raw) {
        match c {
            "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// `dir/name`, or `name` when `dir` is the root (`""`).
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
pub(crate) mod test_tar {
    //! Small in-memory layers for tests.

    pub enum Item<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
    }

    pub fn layer(items: &[Item]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            let mut header = tar::Header::new_gnu();
            match item {
                Item::Dir(path) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder.append_data(&mut header, path, &[][..]).unwrap();
                }
                Item::File(path, data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(0o644);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, *data).unwrap();
                }
                Item::Symlink(path, target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target).unwrap();
                }
                Item::Hardlink(path, target) => {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_tar::{layer, Item::*};
    use super::*;

    fn fs(layers: &[Vec<u8>]) -> RootFs {
        let mut fs = RootFs::new();
        for l in layers {
            fs.apply_layer(&l[..], &|_| true).unwrap();
        }
        fs
    }

    #[test]
    fn a_directory_is_occupied_by_any_entry_but_not_when_empty_or_absent() {
        let fs = fs(&[layer(&[
            Dir("opt/empty/"),
            Dir("opt/conda/"),
            Dir("opt/conda/bin/"),
            File("opt/conda/bin/python", b"\x7fELF"),
            Dir("opt/dirs/sub/"),
            File("srv/tool", b"x"),
            Symlink("srv/link", "/opt/conda"),
            Symlink("data", "/opt"),
        ])]);
        assert_eq!(fs.occupant("/opt/missing"), None);
        assert_eq!(fs.occupant("/nowhere/at/all"), None);
        assert_eq!(fs.occupant("/opt/empty"), None);
        assert_eq!(
            fs.occupant("/opt/conda"),
            Some(Occupant::Entries("/opt/conda/bin/python".into()))
        );
        // Only directories below: the first of them is named.
        assert_eq!(
            fs.occupant("/opt/dirs/"),
            Some(Occupant::Entries("/opt/dirs/sub".into()))
        );
        assert_eq!(fs.occupant("/srv/tool"), Some(Occupant::File));
        assert_eq!(
            fs.occupant("/srv/link"),
            Some(Occupant::Symlink("/opt/conda".into()))
        );
        // A symlinked parent is followed, and the example is under the path asked.
        assert_eq!(
            fs.occupant("/data/conda"),
            Some(Occupant::Entries("/data/conda/bin/python".into()))
        );
        assert_eq!(fs.occupant("/data/empty"), None);
    }

    #[test]
    fn paths_are_normalised_and_parents_implied() {
        let fs = fs(&[layer(&[File("./usr/local/bin/tool", b"x")])]);
        assert!(fs.exists("/usr/local/bin/tool"));
        assert!(fs.exists("usr/local"));
        assert_eq!(fs.list_dir("/usr/local"), vec!["bin"]);
        assert_eq!(fs.read("usr/local/bin/tool"), Some(&b"x"[..]));
    }

    #[test]
    fn symlinks_resolve_absolute_relative_and_through_directories() {
        let fs = fs(&[layer(&[
            Symlink("bin", "usr/bin"),
            File("usr/bin/python3.11", b"elf"),
            Symlink("usr/bin/python3", "python3.11"),
            Symlink("usr/local/bin/python", "/bin/python3"),
            Symlink("loop", "loop"),
        ])]);
        assert_eq!(
            fs.resolve("/bin/python3").as_deref(),
            Some("usr/bin/python3.11")
        );
        assert_eq!(
            fs.resolve("/usr/local/bin/python").as_deref(),
            Some("usr/bin/python3.11")
        );
        assert_eq!(fs.read("/usr/local/bin/python"), Some(&b"elf"[..]));
        assert_eq!(fs.resolve("/loop"), None);
        assert_eq!(fs.list_dir("/bin"), vec!["python3", "python3.11"]);
        assert!(!fs.exists("/bin/python2"));
    }

    #[test]
    fn links_that_climb_past_the_root_stay_inside_it() {
        let fs = fs(&[layer(&[
            File("usr/lib/libz.so.1", b"z"),
            File("tmp/host/os.py", b"in the base"),
            Symlink("usr/lib/python3.11", "../../../../../../tmp/host"),
            Symlink("usr/lib/abs", "/../../usr/lib/libz.so.1"),
            Symlink("lib", "usr/lib"),
            Hardlink("usr/lib/hard-climb", "../../../../usr/lib/libz.so.1"),
            Hardlink("usr/lib/hard-through-link", "lib/libz.so.1"),
        ])]);
        for (link, inside) in [
            ("usr/lib/python3.11/os.py", "tmp/host/os.py"),
            ("usr/lib/abs", "usr/lib/libz.so.1"),
        ] {
            assert_eq!(fs.resolve(link).as_deref(), Some(inside), "{link}");
        }
        assert_eq!(fs.read("usr/lib/hard-climb"), Some(&b"z"[..]));
        assert_eq!(fs.read("usr/lib/hard-through-link"), Some(&b"z"[..]));
    }

    #[test]
    fn whiteout_deletes_a_lower_file_and_its_subtree() {
        let fs = fs(&[
            layer(&[File("usr/bin/python3", b"a"), File("opt/app/x/y", b"b")]),
            layer(&[File("usr/bin/.wh.python3", b""), File("opt/.wh.app", b"")]),
        ]);
        assert!(!fs.exists("usr/bin/python3"));
        assert!(!fs.exists("opt/app/x/y"));
        assert!(fs.exists("usr/bin"));
        assert!(!fs.paths().any(|p| p.contains(".wh.")));
    }

    #[test]
    fn opaque_whiteout_hides_lower_contents_but_not_its_own_layer() {
        let fs = fs(&[
            layer(&[File("etc/a", b"1"), File("etc/sub/b", b"2")]),
            layer(&[File("etc/c", b"3"), File("etc/.wh..wh..opq", b"")]),
        ]);
        assert_eq!(fs.list_dir("etc"), vec!["c"]);
    }

    #[test]
    fn a_symlink_over_a_directory_hides_the_lower_tree() {
        let fs = fs(&[
            layer(&[Dir("lib"), File("lib/libc.so.6", b"old")]),
            layer(&[
                Dir("usr/lib"),
                File("usr/lib/libc.so.6", b"new"),
                Symlink("lib", "usr/lib"),
            ]),
        ]);
        assert_eq!(fs.read("/lib/libc.so.6"), Some(&b"new"[..]));
        assert_eq!(fs.list_dir("/lib"), vec!["libc.so.6"]);
    }

    #[test]
    fn entries_below_a_symlinked_parent_land_in_its_target() {
        let fs = fs(&[
            layer(&[Dir("usr/bin"), Symlink("bin", "usr/bin")]),
            layer(&[File("bin/python3", b"py")]),
        ]);
        assert_eq!(
            fs.resolve("/bin/python3").as_deref(),
            Some("usr/bin/python3")
        );
        assert_eq!(fs.list_dir("/usr/bin"), vec!["python3"]);
    }

    #[test]
    fn unkept_files_have_a_size_but_no_contents() {
        let mut fs = RootFs::new();
        let l = layer(&[
            File("big/blob", b"12345"),
            File("etc/os-release", b"ID=debian"),
        ]);
        fs.apply_layer(&l[..], &RootFs::python_relevant).unwrap();
        assert_eq!(fs.read("big/blob"), None);
        assert_eq!(fs.file_size("big/blob"), Some(5));
        assert_eq!(fs.read("etc/os-release"), Some(&b"ID=debian"[..]));
    }

    #[test]
    fn large_elf_files_keep_only_their_headers() {
        let mut big = b"\x7fELF".to_vec();
        big.resize(200 * 1024, 0);
        let mut fs = RootFs::new();
        fs.apply_layer(&layer(&[File("usr/bin/python3.11", &big)])[..], &|_| true)
            .unwrap();
        assert_eq!(fs.read("usr/bin/python3.11").unwrap().len(), ELF_PREFIX);
        assert_eq!(fs.file_size("usr/bin/python3.11"), Some(200 * 1024));
    }

    #[test]
    fn python_relevant_matches_detection_inputs_only() {
        for yes in [
            "usr/bin/python3",
            "usr/local/bin/python3.12",
            "usr/bin/python3.13t",
            "usr/lib/python3.11/_sysconfigdata__x86_64-linux-gnu.py",
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            "lib/ld-musl-x86_64.so.1",
            "var/lib/dpkg/status",
            "var/lib/dpkg/status.d/libc6",
            "lib/apk/db/installed",
            "usr/lib/python3.11/EXTERNALLY-MANAGED",
            "usr/local/include/python3.12/patchlevel.h",
            "etc/os-release",
        ] {
            assert!(RootFs::python_relevant(yes), "{yes}");
        }
        for no in [
            "usr/bin/python3-config",
            "usr/lib/python3.11/os.py",
            "usr/bin/perl",
            "var/lib/dpkg/status.d/libc6.md5sums",
            "usr/include/python3.11/Python.h",
        ] {
            assert!(!RootFs::python_relevant(no), "{no}");
        }
    }
}
