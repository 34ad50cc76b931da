//! Unpacking only what the base's interpreter needs to compile: the
//! interpreter, its dynamic loader, the shared libraries it and the standard
//! library's extension modules need (their DT_NEEDED and RPATH, searched in
//! the order the loader will search them), and the standard library with its
//! symlinks' targets. The set is read from the base's own files, never from a
//! list of distribution packages.
//!
//! One pass over the layers builds the merged view of the base ([`RootFs`]),
//! noting each file's layer and dynamic section; on the way the standard
//! library and the interpreter are written out, and ELF libraries are held in
//! memory (within a budget). A second pass runs only over the layers that
//! still hold a needed file (one held over the budget, or a hard link).

use super::runner::{library_dirs, pt_interp, LayerStreams};
use crate::python::interpreter::elf::parse_elf;
use crate::python::rootfs::{join, RootFs};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// ELF libraries held in memory during the scan, at most this many bytes in all.
const HELD_BUDGET: u64 = 256 << 20;
/// Larger ELF files are not read for their dynamic section.
const MAX_ELF: u64 = 512 << 20;
/// Directories of the standard library no compile needs (and the identity leaves out).
const SKIPPED_IN_STDLIB: &[&str] = &["site-packages", "dist-packages"];

/// What the scan notes of each regular file (kept as the node's data).
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Facts {
    /// The layer whose version of the file is the one in the merged view.
    layer: usize,
    /// Where the contents are in that layer (another path for a hard link).
    source: String,
    elf: bool,
    interp: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
}

fn facts(fs: &RootFs, path: &str) -> Facts {
    fs.read(path)
        .and_then(|d| serde_json::from_slice(d).ok())
        .unwrap_or_default()
}

/// The base's files the interpreter needs: regular files and the symlinks
/// on the way to them (real paths, no leading `/`).
#[derive(Debug, Default, PartialEq)]
pub struct Selection {
    pub files: BTreeSet<String>,
    pub links: BTreeSet<String>,
}

impl Selection {
    /// `path` resolved through the merged view; on success the regular file
    /// it names and every symlink on the way are selected.
    fn trace_file(&mut self, fs: &RootFs, path: &str) -> Option<String> {
        let mut links = BTreeSet::new();
        let real = trace(fs, path, &mut links).filter(|r| fs.is_file(r))?;
        self.links.extend(links);
        self.files.insert(real.clone());
        Some(real)
    }
}

/// Resolves `path` through the merged view, noting every symlink followed.
fn trace(fs: &RootFs, path: &str, links: &mut BTreeSet<String>) -> Option<String> {
    fs.resolve_noting_links(path, |link| {
        links.insert(link.to_owned());
    })
}

fn in_skipped_dir(rel: &str) -> bool {
    let mut dirs = rel.split('/').collect::<Vec<_>>();
    dirs.pop();
    dirs.iter().any(|d| SKIPPED_IN_STDLIB.contains(d))
}

/// Chooses the files to unpack: `interpreter` (the image's path, symlinks
/// followed), its loader, the standard library below `stdlib`, and the
/// closure of the shared libraries they need. Paths have no leading `/`.
pub fn select(fs: &RootFs, interpreter: &str, stdlib: &str) -> Selection {
    let mut sel = Selection::default();
    let mut queue: Vec<String> = Vec::new();
    if let Some(python) = sel.trace_file(fs, interpreter) {
        let loader = facts(fs, &python)
            .interp
            .and_then(|i| sel.trace_file(fs, &i))
            .or_else(|| find_loader(fs, &mut sel));
        queue.extend(loader);
        queue.push(python);
    }
    let mut links = BTreeSet::new();
    if let Some(real) = trace(fs, stdlib, &mut links).filter(|r| !fs.is_file(r)) {
        sel.links.extend(links);
        let prefix = format!("{real}/");
        let below: Vec<String> = fs
            .paths()
            .filter(|p| p.starts_with(&prefix) && !in_skipped_dir(&p[prefix.len()..]))
            .map(str::to_owned)
            .collect();
        for p in below {
            if fs.read_link(&p).is_some() {
                // Debian's sitecustomize.py is a link into /etc.
                sel.trace_file(fs, &p);
            } else if fs.is_file(&p) {
                if facts(fs, &p).elf {
                    queue.push(p.clone());
                }
                sel.files.insert(p);
            }
        }
    }
    let dirs = library_dirs(&|d: &str| fs.list_dir(d));
    let mut seen = BTreeSet::new();
    while let Some(file) = queue.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let f = facts(fs, &file);
        let origin = file.rsplit_once('/').map_or("", |(d, _)| d);
        let rpath: Vec<String> = f
            .rpath
            .iter()
            .map(|r| {
                r.replace("${ORIGIN}", &format!("/{origin}"))
                    .replace("$ORIGIN", &format!("/{origin}"))
            })
            .collect();
        for name in &f.needed {
            let found = if name.contains('/') {
                sel.trace_file(fs, name)
            } else {
                rpath
                    .iter()
                    .chain(dirs.iter())
                    .find_map(|d| sel.trace_file(fs, &join(d.trim_matches('/'), name)))
            };
            queue.extend(found);
        }
    }
    sel
}

/// Every regular file and symlink of the base: the whole tree, for an sdist
/// build that needs the base's compiler and headers (issue 22).
fn select_everything(fs: &RootFs, sel: &mut Selection) {
    for p in fs.paths() {
        if fs.read_link(p).is_some() {
            sel.links.insert(p.to_owned());
        } else if fs.is_file(p) {
            sel.files.insert(p.to_owned());
        }
    }
}

/// A dynamic loader found by name, when the interpreter's PT_INTERP was no help.
fn find_loader(fs: &RootFs, sel: &mut Selection) -> Option<String> {
    ["lib", "lib64", "usr/lib", "usr/lib64"]
        .iter()
        .flat_map(|d| fs.list_dir(d).into_iter().map(move |n| join(d, &n)))
        .filter(|p| {
            let n = p.rsplit('/').next().unwrap_or("");
            n.starts_with("ld-linux") || n.starts_with("ld-musl-") || n.starts_with("ld64.so")
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .find_map(|p| sel.trace_file(fs, &p))
}

/// Whether a file (by name) may be a shared library worth holding in memory.
fn library_like(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    (name.starts_with("lib") && name.contains(".so")) || name.starts_with("ld-")
}

/// Unpacks into `root` (an empty directory) what the interpreter at
/// `interpreter` needs, from `count` layers; `stdlib` is the standard
/// library's directory. Paths have no leading `/`.
pub fn unpack(
    base: &str,
    root: &Path,
    interpreter: &str,
    stdlib: &str,
    count: usize,
    layers: &mut LayerStreams,
    whole: bool,
) -> Result<(), super::BytecodeError> {
    unpack_with(root, interpreter, stdlib, count, layers, whole).map_err(|e| match e {
        Failure::Layer(e) => e,
        Failure::Io(source) => super::BytecodeError::Unpack {
            base: base.to_owned(),
            dir: root.display().to_string(),
            source,
        },
    })
}

enum Failure {
    Layer(super::BytecodeError),
    Io(io::Error),
}

fn unpack_with(
    root: &Path,
    interpreter: &str,
    stdlib: &str,
    count: usize,
    layers: &mut LayerStreams,
    whole: bool,
) -> Result<(), Failure> {
    let real_root = root.canonicalize().map_err(Failure::Io)?;
    let mut fs = RootFs::new();
    let mut scan = Scan {
        real_root: &real_root,
        interpreter,
        prefix: format!("{stdlib}/"),
        written: HashMap::new(),
        held: HashMap::new(),
        held_bytes: 0,
    };
    for layer in 0..count {
        let mut keep = |path: &str, size: u64, r: &mut dyn Read| scan.keep(layer, path, size, r);
        layers(layer, &mut |tar| {
            fs.apply_layer_with(tar, &mut keep)
                .map_err(io::Error::other)
        })
        .map_err(Failure::Layer)?;
    }
    let Scan { written, held, .. } = scan;

    let mut sel = select(&fs, interpreter, stdlib);
    if whole {
        select_everything(&fs, &mut sel);
    }
    let second = place_from_scan(&real_root, &fs, &sel, &written, held)?;
    for (layer, wanted) in &second {
        layers(*layer, &mut |tar| extract(tar, &real_root, &fs, wanted)).map_err(Failure::Layer)?;
    }
    // What the scan wrote that the merged view no longer has (or that is not needed).
    for path in written.keys() {
        if !sel.files.contains(path) {
            let _ = fs::remove_file(real_root.join(path));
        }
    }
    set_modes(&real_root, &fs, &sel)?;
    make_links(&real_root, &fs, &sel)
}

/// The first pass over the layers: what it wrote out and what it holds.
struct Scan<'a> {
    real_root: &'a Path,
    interpreter: &'a str,
    /// The standard library's directory, with a trailing `/`.
    prefix: String,
    /// Written during the scan: path → layer.
    written: HashMap<String, usize>,
    /// Held in memory: path → (layer, bytes).
    held: HashMap<String, (usize, Vec<u8>)>,
    held_bytes: u64,
}

impl Scan<'_> {
    /// Notes the facts of the regular file at `path` in `layer` (returned as
    /// the node's data); writes it out now when it is the interpreter or in
    /// the standard library, or holds it in memory when it is an ELF library
    /// within the budget.
    fn keep(
        &mut self,
        layer: usize,
        path: &str,
        size: u64,
        r: &mut dyn Read,
    ) -> io::Result<Option<Vec<u8>>> {
        self.written.remove(path);
        if let Some((_, old)) = self.held.remove(path) {
            self.held_bytes -= old.len() as u64;
        }
        let write_now = path == self.interpreter
            || (path.starts_with(&self.prefix) && !in_skipped_dir(&path[self.prefix.len()..]));
        let mut head = Vec::new();
        (&mut *r).take(4).read_to_end(&mut head)?;
        let mut facts = Facts {
            layer,
            source: path.to_owned(),
            ..Facts::default()
        };
        if head.starts_with(b"\x7fELF") && size <= MAX_ELF {
            let mut bytes = Vec::with_capacity(size as usize);
            bytes.extend_from_slice(&head);
            r.read_to_end(&mut bytes)?;
            facts.elf = true;
            facts.interp = pt_interp(&bytes);
            if let Some(d) = parse_elf(&bytes) {
                (facts.needed, facts.rpath) = (d.needed, d.rpath);
            }
            if write_now {
                write_file(self.real_root, path, &mut &bytes[..])?;
                self.written.insert(path.to_owned(), layer);
            } else if library_like(path) && self.held_bytes + bytes.len() as u64 <= HELD_BUDGET {
                self.held_bytes += bytes.len() as u64;
                self.held.insert(path.to_owned(), (layer, bytes));
            }
        } else if write_now {
            write_file(self.real_root, path, &mut (&head[..]).chain(r))?;
            self.written.insert(path.to_owned(), layer);
        }
        Ok(Some(serde_json::to_vec(&facts).map_err(io::Error::other)?))
    }
}

/// Places the selected files the scan wrote out or holds; returns the rest,
/// for the second pass: layer → where the contents are → where they go.
fn place_from_scan(
    real_root: &Path,
    fs: &RootFs,
    sel: &Selection,
    written: &HashMap<String, usize>,
    held: HashMap<String, (usize, Vec<u8>)>,
) -> Result<BTreeMap<usize, HashMap<String, Vec<String>>>, Failure> {
    let mut second: BTreeMap<usize, HashMap<String, Vec<String>>> = BTreeMap::new();
    for file in &sel.files {
        let f = facts(fs, file);
        if written.get(&f.source) == Some(&f.layer) {
            if f.source != *file {
                copy_within(real_root, &f.source, file).map_err(Failure::Io)?;
            }
        } else if let Some((_, bytes)) = held.get(&f.source).filter(|(l, _)| *l == f.layer) {
            write_file(real_root, file, &mut &bytes[..]).map_err(Failure::Io)?;
        } else {
            second
                .entry(f.layer)
                .or_default()
                .entry(f.source)
                .or_default()
                .push(file.clone());
        }
    }
    Ok(second)
}

/// Gives each selected file its mode from the base (always readable and
/// writable by the owner, so the cache can be cleaned).
fn set_modes(real_root: &Path, fs: &RootFs, sel: &Selection) -> Result<(), Failure> {
    for file in &sel.files {
        let mode = fs.file_mode(file).unwrap_or(0o644) & 0o777;
        fs::set_permissions(
            real_root.join(file),
            fs::Permissions::from_mode(mode | 0o600),
        )
        .map_err(|e| Failure::Io(io::Error::new(e.kind(), format!("{file}: {e}"))))?;
    }
    Ok(())
}

/// Creates the selected symlinks, each pointing where it resolves in the
/// merged view: there `..` at the root stays at the root and absolute targets
/// start at the root (as `openat2(RESOLVE_IN_ROOT)` resolves), while the
/// kernel would follow the base's own text past the unpacked root into the
/// host. A link that resolves nowhere in the view is not made.
fn make_links(real_root: &Path, fs: &RootFs, sel: &Selection) -> Result<(), Failure> {
    for link in &sel.links {
        let Some(real) = fs.resolve(link) else {
            continue;
        };
        let (dir, _) = link.rsplit_once('/').unwrap_or(("", link));
        if !make_dirs_inside(real_root, dir) {
            continue;
        }
        let dest = real_root.join(link);
        let _ = remove_all(&dest);
        std::os::unix::fs::symlink(relative_target(dir, &real), &dest).map_err(Failure::Io)?;
    }
    Ok(())
}

/// The target to write for a symlink in `dir` that resolves to `real` (both
/// real paths below the root, so every `..` climbs a real directory): up to
/// their common ancestor, then down. It never climbs above the root.
fn relative_target(dir: &str, real: &str) -> String {
    let from: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    let to: Vec<&str> = real.split('/').filter(|c| !c.is_empty()).collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// The second pass over one layer: each regular file named in `wanted`
/// (by its path in the merged view) is written to its destinations.
fn extract(
    tar: &mut dyn Read,
    real_root: &Path,
    fs: &RootFs,
    wanted: &HashMap<String, Vec<String>>,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = crate::python::rootfs::normalise(&raw) else {
            continue;
        };
        // As in the merged view, parents resolve inside the root.
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let path = join(&fs.resolve(dir).unwrap_or_else(|| dir.to_owned()), name);
        let Some(dests) = wanted.get(&path) else {
            continue;
        };
        let (first, rest) = dests.split_first().expect("non-empty");
        write_file(real_root, first, &mut entry)?;
        for d in rest {
            copy_within(real_root, first, d)?;
        }
    }
    Ok(())
}

/// Writes a regular file at `path` below `real_root`, replacing what is there.
fn write_file(real_root: &Path, path: &str, r: &mut dyn Read) -> io::Result<()> {
    let (dir, _) = path.rsplit_once('/').unwrap_or(("", path));
    if !make_dirs_inside(real_root, dir) {
        return Err(io::Error::other(format!("{path}: not inside the root")));
    }
    let dest = real_root.join(path);
    let _ = remove_all(&dest);
    let mut file = fs::File::create(&dest)?;
    io::copy(r, &mut file)?;
    Ok(())
}

fn copy_within(real_root: &Path, from: &str, to: &str) -> io::Result<()> {
    let mut src = fs::File::open(real_root.join(from))?;
    write_file(real_root, to, &mut src)
}

/// Creates `dir` below `root` one component at a time, refusing to follow
/// a symlink out of `root` (so a hostile layer cannot create or write
/// anything outside it). True when `dir` exists inside `root`.
pub(super) fn make_dirs_inside(real_root: &Path, dir: &str) -> bool {
    let mut here = real_root.to_path_buf();
    for c in dir.split('/').filter(|c| !c.is_empty()) {
        here.push(c);
        if fs::symlink_metadata(&here).is_err() && fs::create_dir(&here).is_err() {
            return false;
        }
        match here.canonicalize() {
            Ok(real) if real.starts_with(real_root) && real.is_dir() => here = real,
            _ => return false,
        }
    }
    true
}

/// Removes a file, symlink or directory tree; a missing path is fine.
pub(super) fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // Directories unpacked read-only must be writable to be emptied.
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
            for child in fs::read_dir(path)? {
                remove_all(&child?.path())?;
            }
            fs::remove_dir(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::interpreter::test_images::fake_so;
    use crate::python::rootfs::test_tar::{layer, Item::*};

    /// The files and symlinks below `root`, as `path` or `path -> target`.
    fn tree(root: &Path) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for e in fs::read_dir(&dir).unwrap().flatten() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                let t = e.file_type().unwrap();
                if t.is_symlink() {
                    let target = fs::read_link(e.path()).unwrap();
                    out.insert(format!("{rel} -> {}", target.display()));
                } else if t.is_dir() {
                    dirs.push(e.path());
                } else {
                    out.insert(rel);
                }
            }
        }
        out
    }

    #[test]
    fn only_the_interpreter_its_loader_libraries_and_stdlib_are_unpacked() {
        let lib = "usr/lib/x86_64-linux-gnu";
        let path = |name: &str| format!("{lib}/{name}");
        let (libc, libm, libssl, ossl, unused, ld) = (
            path("libc.so.6"),
            path("libm.so.6"),
            path("libssl.so.3"),
            path("ossl.so"),
            path("libunused.so.1"),
            path("ld-linux-x86-64.so.2"),
        );
        let (so_c, so_m, so_ssl) = (
            fake_so(&[], None),
            fake_so(&["libc.so.6"], None),
            fake_so(&["libc.so.6", "ossl.so"], None),
        );
        let python = fake_so(&["libm.so.6", "libc.so.6"], None);
        let ssl_module = fake_so(&["libssl.so.3"], None);
        let first = layer(&[
            Symlink("lib", "usr/lib"),
            File("usr/bin/python3.11", &python),
            Symlink("usr/bin/python3", "python3.11"),
            File(&libc, &so_c),
            File(&libm, &so_m),
            File("usr/lib/x86_64-linux-gnu/libssl.so.3.0", &so_ssl),
            Symlink(&libssl, "libssl.so.3.0"),
            // Not library-like by name: not held in memory, read in a second pass.
            File(&ossl, &so_c),
            File(&unused, &so_c),
            File(&ld, &so_c),
            Symlink("lib64/ld-linux-x86-64.so.2", &format!("/{ld}")),
            File("usr/bin/perl", &so_m),
            File("usr/share/doc/python3/README", b"docs"),
            File("usr/lib/python3.11/os.py", b"v1"),
            File("usr/lib/python3.11/gone.py", b"x"),
            File(
                "usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
                &ssl_module,
            ),
            File("usr/lib/python3.11/site-packages/pkg/x.py", b"x"),
            File("etc/python3.11/sitecustomize.py", b"site"),
            Symlink(
                "usr/lib/python3.11/sitecustomize.py",
                "/etc/python3.11/sitecustomize.py",
            ),
            // A hard link, by the path through `lib`: its contents are libc's.
            Hardlink("lib/x86_64-linux-gnu/libc-copy.so.6", &libc),
        ]);
        let second = layer(&[
            File("usr/lib/python3.11/.wh.gone.py", b""),
            File("usr/lib/python3.11/os.py", b"v2"),
        ]);
        let layers = [first, second];
        let root = tempfile::tempdir().unwrap();
        let mut opened = Vec::new();
        let mut streams = |i: usize, f: &mut dyn FnMut(&mut dyn Read) -> io::Result<()>| {
            opened.push(i);
            f(&mut &layers[i][..])
                .map_err(|source| super::super::BytecodeError::Base(Box::new(source)))
        };
        unpack(
            "test",
            root.path(),
            "usr/bin/python3",
            "usr/lib/python3.11",
            2,
            &mut streams,
            false,
        )
        .unwrap();
        // Each layer once to scan, and the first again for the one file not held.
        assert_eq!(opened, [0, 1, 0]);
        let want: BTreeSet<String> = [
            // The loader searches lib/x86_64-linux-gnu first, through the link.
            "lib -> usr/lib",
            "usr/bin/python3.11",
            "usr/bin/python3 -> python3.11",
            "lib64/ld-linux-x86-64.so.2 -> ../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            &ld,
            &libc,
            &libm,
            "usr/lib/x86_64-linux-gnu/libssl.so.3.0",
            "usr/lib/x86_64-linux-gnu/libssl.so.3 -> libssl.so.3.0",
            &ossl,
            "usr/lib/python3.11/os.py",
            "usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
            "usr/lib/python3.11/sitecustomize.py -> ../../../etc/python3.11/sitecustomize.py",
            "etc/python3.11/sitecustomize.py",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(tree(root.path()), want);
        let r = root.path();
        assert_eq!(fs::read(r.join("usr/lib/python3.11/os.py")).unwrap(), b"v2");
        assert_eq!(fs::read(r.join(&ossl)).unwrap(), so_c);
        assert_eq!(fs::read(r.join(&libm)).unwrap(), so_m);
        assert_eq!(
            fs::read(r.join("usr/lib/python3.11/sitecustomize.py")).unwrap(),
            b"site"
        );
    }

    #[test]
    fn a_hard_link_gets_its_targets_contents_and_links_cannot_escape() {
        let libz = fake_so(&[], None);
        let python = fake_so(&["libz.so.1"], None);
        let first = layer(&[
            File("usr/bin/python3.11", &python),
            File("usr/lib/zlib-real", &libz),
            Hardlink("usr/lib/libz.so.1", "usr/lib/zlib-real"),
            Symlink("usr/lib/python3.11/escape", "../../../../../etc"),
            File("usr/lib/python3.11/escape/passwd", b"evil"),
            File("usr/lib/python3.11/os.py", b"os"),
        ]);
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let inner = outside.join("root");
        fs::create_dir(&inner).unwrap();
        unpack_one_layer(&first, &inner);
        assert_eq!(fs::read(inner.join("usr/lib/libz.so.1")).unwrap(), libz);
        assert!(!inner.join("usr/lib/zlib-real").exists());
        assert_eq!(
            fs::read(inner.join("usr/lib/python3.11/os.py")).unwrap(),
            b"os"
        );
        // The escaping link resolves inside the root, to etc/, which is not the stdlib.
        assert!(!outside.join("etc").exists() && !inner.join("etc/passwd").exists());
    }

    /// Unpacks python3.11 from a base of the one layer `tar` into `root`.
    fn unpack_one_layer(tar: &[u8], root: &Path) {
        let mut streams = |_: usize, f: &mut dyn FnMut(&mut dyn Read) -> io::Result<()>| {
            f(&mut &tar[..]).map_err(|source| super::super::BytecodeError::Base(Box::new(source)))
        };
        unpack(
            "test",
            root,
            "usr/bin/python3.11",
            "usr/lib/python3.11",
            1,
            &mut streams,
            false,
        )
        .unwrap();
    }

    /// The sources the stdlib walk of [`super::super::collect_stdlib`] finds
    /// below `root`, with their contents.
    fn stdlib_sources(root: &Path, stdlib: &str) -> Vec<(String, Vec<u8>)> {
        let mut sources = Vec::new();
        super::super::collect_stdlib(root, stdlib, "cpython-311", &mut sources).unwrap();
        let real_root = root.canonicalize().unwrap();
        sources
            .into_iter()
            .map(|s| {
                let real = s.host.canonicalize().unwrap();
                assert!(
                    real.starts_with(&real_root),
                    "{} is outside",
                    real.display()
                );
                (s.path.to_string(), fs::read(real).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_stdlib_linked_out_of_the_root_with_extra_dotdots_resolves_inside_it() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory on the host that the base's links name.
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("host_secret.py"), b"host").unwrap();
        let host = outside.display().to_string();
        let in_base = host.trim_start_matches('/');
        let (os_py, secret_py) = (
            format!("{in_base}/os.py"),
            format!("{in_base}/host_secret.py"),
        );
        let first = layer(&[
            File("usr/bin/python3.11", &fake_so(&[], None)),
            // Relative, with more `..` than the unpacked root is deep.
            Symlink(
                "usr/lib/python3.11",
                &format!("{}{in_base}", "../".repeat(40)),
            ),
            // The same path inside the base: where the link leads in the image.
            File(&os_py, b"base os"),
            File(&secret_py, b"base"),
            // Absolute, climbing above `/` first.
            Symlink(
                &format!("{in_base}/abs.py"),
                &format!("/../../..{host}/host_secret.py"),
            ),
            // A hard link that climbs out names the base's own file.
            Hardlink(
                &format!("{in_base}/hard.py"),
                &format!("../../../..{host}/host_secret.py"),
            ),
        ]);
        let root = tmp.path().join("cache/roots/key");
        fs::create_dir_all(&root).unwrap();
        unpack_one_layer(&first, &root);
        let mut found = stdlib_sources(&root, "usr/lib/python3.11");
        found.sort();
        let base_file =
            |name: &str, content: &[u8]| (format!("/usr/lib/python3.11/{name}"), content.to_vec());
        assert_eq!(
            found,
            [
                base_file("abs.py", b"base"),
                base_file("hard.py", b"base"),
                base_file("host_secret.py", b"base"),
                base_file("os.py", b"base os"),
            ]
        );
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            1,
            "nothing was written on the host"
        );
    }

    #[test]
    fn symlink_targets_climb_only_to_the_common_ancestor() {
        assert_eq!(relative_target("usr/lib", "usr/lib/x"), "x");
        assert_eq!(relative_target("usr/lib", "etc/p"), "../../etc/p");
        assert_eq!(relative_target("", "usr/lib"), "usr/lib");
        assert_eq!(relative_target("usr/lib", ""), "../..");
        assert_eq!(relative_target("usr", "usr"), ".");
    }
}
