//! Native libraries: every ELF file a wheel installs (extension modules,
//! bundled libraries, executables in `bin`) must find each of its DT_NEEDED
//! libraries in the image, the way the dynamic loader would: its RPATH or
//! RUNPATH (with `$ORIGIN`, as auditwheel's `<pkg>.libs` uses), the base's
//! library directories (ld.so.conf with its includes, and the standard and
//! multiarch directories), or a library another installed package ships.
//!
//! The work is split so a warm build pays nothing: what a wheel needs and
//! ships ([`WheelNative`]) depends on the wheel alone and is cached per wheel;
//! what the base has ([`BaseLibs`]) is cached per base manifest; matching the
//! two is a few set look-ups.

use super::CheckError;
use crate::layer::path::clean_absolute;
use crate::python::rootfs::RootFs;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What one wheel needs from outside itself, and the libraries it ships.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WheelNative {
    /// File names of the shared libraries the wheel installs.
    pub provides: Vec<String>,
    /// Needs its own files do not meet.
    pub needs: Vec<Need>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Need {
    /// The ELF file, as an absolute image path.
    pub file: String,
    pub library: String,
    /// Its RPATH/RUNPATH directories with `$ORIGIN` expanded (no leading `/`).
    pub search: Vec<String>,
}

/// The libraries of a base image: every name in its library directories.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseLibs {
    /// The loader's directories, in its order (no leading `/`).
    pub dirs: Vec<String>,
    /// `dir/name` for every entry of those directories, and of any directory
    /// a wheel's RPATH may name (all of `usr/lib` and `lib` below).
    pub files: BTreeSet<String>,
}

/// The directories glibc's and musl's loaders search without ld.so.conf.
const DEFAULT_DIRS: &[&str] = &[
    "lib",
    "usr/lib",
    "lib64",
    "usr/lib64",
    "usr/local/lib",
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
];

/// Libraries glibc ships beside `libc.so.6`, in the same package: where the C
/// library is, they are (since glibc 2.34 most are stubs).
const GLIBC_PARTS: &[&str] = &[
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "libanl.so.1",
    "libmvec.so.1",
    "libnss_files.so.2",
    "libnss_dns.so.2",
    "libthread_db.so.1",
];

impl BaseLibs {
    /// Reads the loader's directories and their contents from a base's files.
    /// `rootfs` must have kept the contents of `etc/ld.so.conf*`.
    pub fn from_rootfs(rootfs: &RootFs) -> BaseLibs {
        let mut dirs: Vec<String> = Vec::new();
        let mut pending = vec!["etc/ld.so.conf".to_owned()];
        let mut read = BTreeSet::new();
        while let Some(conf) = pending.pop() {
            if !read.insert(conf.clone()) {
                continue;
            }
            let Some(text) = rootfs.read(&conf) else {
                continue;
            };
            for line in String::from_utf8_lossy(text).lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if let Some(pattern) = line.strip_prefix("include") {
                    let pattern = pattern.trim().trim_start_matches('/');
                    let (dir, glob) = pattern.rsplit_once('/').unwrap_or(("", pattern));
                    let (prefix, suffix) = glob.split_once('*').unwrap_or((glob, ""));
                    let mut found: Vec<String> = rootfs
                        .list_dir(dir)
                        .into_iter()
                        .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
                        .map(|n| format!("{dir}/{n}"))
                        .collect();
                    found.sort();
                    found.reverse();
                    pending.extend(found);
                } else if line.starts_with('/') {
                    let d = line.trim_matches('/').to_owned();
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
            }
        }
        // musl's loader reads its path file instead of ld.so.conf.
        for name in rootfs.list_dir("etc") {
            if name.starts_with("ld-musl-") && name.ends_with(".path") {
                if let Some(text) = rootfs.read(&format!("etc/{name}")) {
                    for d in String::from_utf8_lossy(text).split(['\n', ':']) {
                        let d = d.trim().trim_matches('/').to_owned();
                        if !d.is_empty() && !dirs.contains(&d) {
                            dirs.push(d);
                        }
                    }
                }
            }
        }
        for d in DEFAULT_DIRS {
            if !dirs.iter().any(|x| x == d) {
                dirs.push((*d).to_owned());
            }
        }
        let mut files = BTreeSet::new();
        for d in &dirs {
            for name in rootfs.list_dir(d) {
                if rootfs.exists(&format!("{d}/{name}")) {
                    files.insert(format!("{d}/{name}"));
                }
            }
        }
        BaseLibs { dirs, files }
    }

    fn has(&self, dir: &str, name: &str) -> bool {
        self.files.contains(&format!("{dir}/{name}"))
            || (GLIBC_PARTS.contains(&name) && self.files.contains(&format!("{dir}/libc.so.6")))
    }
}

/// Whether the rootfs reader must keep a file's contents for [`BaseLibs`].
pub fn keep_for_libs(path: &str) -> bool {
    path == "etc/ld.so.conf"
        || path.starts_with("etc/ld.so.conf.d/")
        || (path.starts_with("etc/ld-musl-") && path.ends_with(".path"))
}

/// Matches every wheel's needs against the base and the other wheels.
/// `wheels` pairs a package label (`numpy 2.3.0`) with its native facts.
pub fn check(
    wheels: &[(String, &WheelNative)],
    base: &BaseLibs,
    allowed: &[String],
) -> Result<(), CheckError> {
    let shipped: BTreeSet<&str> = wheels
        .iter()
        .flat_map(|(_, w)| w.provides.iter().map(String::as_str))
        .collect();
    for (label, w) in wheels {
        for need in &w.needs {
            let lib = need.library.as_str();
            let found = need.search.iter().any(|d| base.has(d, lib))
                || base.dirs.iter().any(|d| base.has(d, lib))
                || shipped.contains(lib)
                || allowed.iter().any(|a| a == lib);
            if !found {
                return Err(CheckError::MissingLibrary {
                    package: label.clone(),
                    file: need.file.clone(),
                    library: lib.to_owned(),
                    hint: hint(lib),
                });
            }
        }
    }
    Ok(())
}

/// What provides a library on Debian-style bases.
fn hint(lib: &str) -> String {
    let known: BTreeMap<&str, &str> = [
        ("libstdc++.so.6", "libstdc++6"),
        ("libgomp.so.1", "libgomp1"),
        ("libgfortran.so.5", "libgfortran5"),
        ("libquadmath.so.0", "libquadmath0"),
        ("libatomic.so.1", "libatomic1"),
        ("libz.so.1", "zlib1g"),
        ("libssl.so.3", "libssl3"),
        ("libcrypto.so.3", "libssl3"),
        ("libffi.so.8", "libffi8"),
        ("libGL.so.1", "libgl1"),
        ("libglib-2.0.so.0", "libglib2.0-0"),
        ("libgthread-2.0.so.0", "libglib2.0-0"),
        ("libxcb.so.1", "libxcb1"),
        ("libX11.so.6", "libx11-6"),
        ("libpq.so.5", "libpq5"),
        ("libjpeg.so.62", "libjpeg62-turbo"),
        ("libsqlite3.so.0", "libsqlite3-0"),
        ("libexpat.so.1", "libexpat1"),
        ("libuuid.so.1", "libuuid1"),
    ]
    .into_iter()
    .collect();
    let allow =
        format!("or, if the runtime mounts it, list it in `allow-missing-libraries = [\"{lib}\"]`");
    match known.get(lib) {
        Some(pkg) if lib == "libstdc++.so.6" => format!(
            "on Debian-style bases the `{pkg}` package provides it (python:*-slim images have it): add it to the base image, {allow}"
        ),
        Some(pkg) => format!(
            "on Debian-style bases the `{pkg}` package provides it: add it to the base image, {allow}"
        ),
        None => format!("add the package that provides it to the base image, {allow}"),
    }
}

// The dynamic-section reader is shared with the bytecode runner (python::interpreter::elf).
pub use crate::python::interpreter::elf::{is_elf, parse_elf, ElfDeps};

/// An RPATH entry as a directory in the image (no leading `/`), with
/// `$ORIGIN` replaced by the directory of the file that names it.
fn resolve_dir(origin_dir: &str, entry: &str) -> Option<String> {
    let expanded = entry
        .replace("${ORIGIN}", &format!("/{origin_dir}"))
        .replace("$ORIGIN", &format!("/{origin_dir}"));
    if !expanded.starts_with('/') {
        return None;
    }
    Some(clean_absolute(&expanded)[1..].to_owned())
}

/// The needs of the ELF files of one wheel. `files` lists every path (no
/// leading `/`) the wheel installs; `elves` the parsed ELF files among them.
pub fn wheel_native(files: &BTreeSet<String>, elves: &[(String, ElfDeps)]) -> WheelNative {
    let mut provides: BTreeSet<String> = BTreeSet::new();
    for (path, _) in elves {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.contains(".so") {
            provides.insert(name.to_owned());
        }
    }
    let mut needs = Vec::new();
    for (path, deps) in elves {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        let search: Vec<String> = deps
            .rpath
            .iter()
            .filter_map(|r| resolve_dir(dir, r))
            .collect();
        for lib in &deps.needed {
            if lib.contains('/') {
                continue;
            }
            let own = search.iter().any(|d| files.contains(&format!("{d}/{lib}")));
            if own {
                continue;
            }
            needs.push(Need {
                file: format!("/{path}"),
                library: lib.clone(),
                search: search.clone(),
            });
        }
    }
    WheelNative {
        provides: provides.into_iter().collect(),
        needs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::interpreter::test_images::fake_so;
    use crate::python::rootfs::test_tar::{layer, Item};

    #[test]
    fn the_dynamic_section_is_read() {
        let so = fake_so(
            &["libstdc++.so.6", "libc.so.6"],
            Some("$ORIGIN/../numpy.libs"),
        );
        assert_eq!(
            parse_elf(&so),
            Some(ElfDeps {
                needed: vec!["libstdc++.so.6".into(), "libc.so.6".into()],
                rpath: vec!["$ORIGIN/../numpy.libs".into()],
            })
        );
        assert_eq!(parse_elf(b"#!/bin/sh\n"), None);
    }

    fn base(files: &[&str], conf: &[(&str, &str)]) -> BaseLibs {
        let mut items: Vec<Item> = files.iter().map(|f| Item::File(f, b"x")).collect();
        items.extend(conf.iter().map(|(p, t)| Item::File(p, t.as_bytes())));
        let mut rootfs = RootFs::new();
        rootfs
            .apply_layer(&layer(&items)[..], &keep_for_libs)
            .unwrap();
        BaseLibs::from_rootfs(&rootfs)
    }

    #[test]
    fn ld_so_conf_and_its_includes_add_directories() {
        let b = base(
            &[
                "opt/vendor/lib/libfoo.so.1",
                "usr/lib/x86_64-linux-gnu/libc.so.6",
            ],
            &[
                ("etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n"),
                (
                    "etc/ld.so.conf.d/vendor.conf",
                    "# vendor\n/opt/vendor/lib\n",
                ),
            ],
        );
        let musl = base(
            &["opt/musl/libbar.so"],
            &[("etc/ld-musl-x86_64.path", "/lib:/usr/local/lib:/opt/musl\n")],
        );
        assert!(musl.has("opt/musl", "libbar.so"));
        assert_eq!(b.dirs[0], "opt/vendor/lib");
        assert!(b.has("opt/vendor/lib", "libfoo.so.1"));
        assert!(b.has("usr/lib/x86_64-linux-gnu", "libc.so.6"));
    }

    #[test]
    fn needs_are_met_by_origin_base_or_other_packages_and_named_when_not() {
        let sp = "app/.venv/lib/python3.11/site-packages";
        let files: BTreeSet<String> = [
            format!("{sp}/numpy/core/_multiarray.so"),
            format!("{sp}/numpy.libs/libopenblas.so"),
        ]
        .into_iter()
        .collect();
        let elves = vec![
            (
                format!("{sp}/numpy/core/_multiarray.so"),
                ElfDeps {
                    needed: vec![
                        "libopenblas.so".into(),
                        "libstdc++.so.6".into(),
                        "libc.so.6".into(),
                    ],
                    rpath: vec!["$ORIGIN/../../numpy.libs".into()],
                },
            ),
            (
                format!("{sp}/numpy.libs/libopenblas.so"),
                ElfDeps::default(),
            ),
        ];
        let numpy = wheel_native(&files, &elves);
        assert_eq!(numpy.provides, ["_multiarray.so", "libopenblas.so"]);
        assert_eq!(
            numpy
                .needs
                .iter()
                .map(|n| n.library.as_str())
                .collect::<Vec<_>>(),
            ["libstdc++.so.6", "libc.so.6"],
            "libopenblas is met by $ORIGIN"
        );
        let without = base(&["usr/lib/x86_64-linux-gnu/libc.so.6"], &[]);
        let wheels = [("numpy 2.3.0".to_string(), &numpy)];
        let e = check(&wheels, &without, &[]).unwrap_err().to_string();
        assert!(
            e.contains("numpy 2.3.0")
                && e.contains("libstdc++.so.6")
                && e.contains("_multiarray.so")
                && e.contains("libstdc++6")
                && e.contains("allow-missing-libraries"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        check(&wheels, &without, &["libstdc++.so.6".into()]).unwrap();
        let with = base(
            &[
                "usr/lib/x86_64-linux-gnu/libc.so.6",
                "usr/lib/x86_64-linux-gnu/libstdc++.so.6",
            ],
            &[],
        );
        check(&wheels, &with, &[]).unwrap();
        // glibc's parts come with libc.so.6.
        let threads = WheelNative {
            provides: vec![],
            needs: vec![Need {
                file: "/x.so".into(),
                library: "libpthread.so.0".into(),
                search: vec![],
            }],
        };
        check(&[("t 1".into(), &threads)], &without, &[]).unwrap();
        // Another package shipping the library meets the need too.
        let other = WheelNative {
            provides: vec!["libstdc++.so.6".into()],
            needs: vec![],
        };
        check(
            &[wheels[0].clone(), ("libstdcxx 1".into(), &other)],
            &without,
            &[],
        )
        .unwrap();
    }
}
