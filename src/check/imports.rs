//! Undeclared imports (issue 23): a module the app needs at import that no
//! installed package, the standard library or the app itself provides. A
//! package that imports `pkg_resources` without declaring setuptools runs in
//! a pip-made image (which has setuptools by accident) and fails in ours.
//!
//! Read without running anything: from the app's module, the unconditional
//! imports at each module's top level (not inside `try`, `if`, a function
//! or a class, so not `if TYPE_CHECKING:` either) are followed through the
//! app layer and the wheels, as far as Python would import them when the
//! app starts. Only what is reached counts: a package's optional submodule
//! that imports an optional dependency (`fastapi.testclient` and httpx) is
//! never reached unless the app imports it. A warning, not an error: the
//! reading is a person's skim, not the interpreter.

use super::app::logical_lines;
use crate::layer::tar::ExternalContent;
use crate::layer::{Content, EntryKind, ImagePath, LayerPlan};
use crate::python::install::{self as wheel, WheelContent};
use crate::python::venv::VenvTarget;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::PathBuf;

/// The standard library's top-level modules, CPython 3.9 to 3.15 (their
/// `sys.stdlib_module_names` and the modules removed meanwhile), leaving out
/// the private `_name` ones: a `_name` import is never reported.
const STDLIB: &str = "__future__ abc aifc annotationlib antigravity argparse array ast asynchat \
asyncio asyncore atexit audioop base64 bdb binascii binhex bisect builtins bz2 cProfile calendar \
cgi cgitb chunk cmath cmd code codecs codeop collections colorsys compileall compression \
concurrent configparser contextlib contextvars copy copyreg crypt csv ctypes curses dataclasses \
datetime dbm decimal difflib dis distutils doctest email encodings ensurepip enum errno \
faulthandler fcntl filecmp fileinput fnmatch formatter fractions ftplib functools gc \
genericpath getopt getpass gettext glob graphlib grp gzip hashlib heapq hmac html http idlelib \
imaplib imghdr imp importlib inspect io ipaddress itertools json keyword lib2to3 linecache \
locale logging lzma mailbox mailcap marshal math mimetypes mmap modulefinder msilib msvcrt \
multiprocessing netrc nis nntplib nt ntpath nturl2path numbers opcode operator optparse os \
ossaudiodev parser pathlib pdb pickle pickletools pipes pkgutil platform plistlib poplib posix \
posixpath pprint profile pstats pty pwd py_compile pyclbr pydoc pydoc_data pyexpat queue quopri \
random re readline reprlib resource rlcompleter runpy sched secrets select selectors shelve \
shlex shutil signal site smtpd smtplib sndhdr socket socketserver spwd sqlite3 sre_compile \
sre_constants sre_parse ssl stat statistics string stringprep struct subprocess sunau symbol \
symtable sys sysconfig syslog tabnanny tarfile telnetlib tempfile termios textwrap this \
threading time timeit tkinter token tokenize tomllib trace traceback tracemalloc tty turtle \
turtledemo types typing unicodedata unittest urllib uu uuid venv warnings wave weakref \
webbrowser winreg winsound wsgiref xdrlib xml xmlrpc zipapp zipfile zipimport zlib zoneinfo";

/// Modules whose distribution has another name, for the hint.
const DISTRIBUTIONS: &[(&str, &str)] = &[
    ("pkg_resources", "setuptools"),
    ("setuptools", "setuptools"),
    ("yaml", "PyYAML"),
    ("PIL", "Pillow"),
    ("cv2", "opencv-python-headless"),
    ("sklearn", "scikit-learn"),
    ("bs4", "beautifulsoup4"),
    ("dateutil", "python-dateutil"),
    ("jwt", "PyJWT"),
    ("dotenv", "python-dotenv"),
    ("multipart", "python-multipart"),
    ("magic", "python-magic"),
];

/// How many modules the walk reads at most, and how large one may be.
const MAX_MODULES: usize = 20_000;
pub(crate) const MAX_MODULE_BYTES: u64 = 1 << 20;

/// One installed package, for the walk.
pub struct Package {
    /// `name version`, as messages name it.
    pub label: String,
    /// Names directly in site-packages (`pkg`, `mod.py`, `_x.cpython-…so`).
    pub top_level: Vec<String>,
    /// The wheel in the store; `None` when only its layer is at hand (reused
    /// from a registry), so its modules are not read.
    pub wheel: Option<PathBuf>,
}

/// An import nothing provides.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Missing {
    /// The top-level module imported.
    pub module: String,
    /// Who imports it: `the app`, or a package's label.
    pub importer: String,
    /// The importing module, dotted.
    pub from: String,
}

/// The imports a module's top level makes unconditionally, as absolute
/// dotted names, each with whether it must exist (`import a.b`, the module
/// of `from a import b`) or may be a name instead of a module (`b` there).
pub fn module_imports(text: &str, module: &str, is_package: bool) -> Vec<(String, bool)> {
    let package: Vec<&str> = {
        let mut parts: Vec<&str> = module.split('.').collect();
        if !is_package {
            parts.pop();
        }
        parts
    };
    let mut out = Vec::new();
    for line in logical_lines(text) {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let stmt = line.trim();
        if let Some(rest) = stmt.strip_prefix("import ") {
            for item in rest.split(',') {
                let name = item.split(" as ").next().unwrap_or_default().trim();
                if !name.is_empty() {
                    out.push((name.to_owned(), true));
                }
            }
        } else if let Some(rest) = stmt.strip_prefix("from ") {
            let Some((from, names)) = rest.split_once(" import ") else {
                continue;
            };
            let Some(base) = absolute(from.trim(), &package) else {
                continue;
            };
            if base == "__future__" {
                continue;
            }
            let names = names.trim().trim_start_matches('(').trim_end_matches(')');
            for name in names.split(',') {
                let name = name.split(" as ").next().unwrap_or_default().trim();
                if !name.is_empty() && name != "*" {
                    let full = if base.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{base}.{name}")
                    };
                    out.push((full, base.is_empty()));
                }
            }
            if !base.is_empty() {
                out.push((base, true));
            }
        }
    }
    out
}

/// `from .x import` made absolute against `package` (its parts); `None`
/// when it climbs above the top.
fn absolute(from: &str, package: &[&str]) -> Option<String> {
    let dots = from.chars().take_while(|c| *c == '.').count();
    if dots == 0 {
        return Some(from.to_owned());
    }
    let keep = package.len().checked_sub(dots - 1)?;
    let mut parts: Vec<&str> = package[..keep].to_vec();
    let rest = &from[dots..];
    if !rest.is_empty() {
        parts.push(rest);
    }
    Some(parts.join("."))
}

/// The modules the app layer and the wheels hold, by dotted name.
struct Modules<'a> {
    app: &'a LayerPlan,
    /// The app's import roots, in `sys.path` order.
    roots: Vec<ImagePath>,
    packages: &'a [Package],
    target: &'a VenvTarget,
    /// Each wheel's install plan, read when one of its modules is first needed.
    plans: HashMap<usize, Option<LayerPlan>>,
    contents: HashMap<usize, WheelContent>,
    /// Top-level names something provides.
    provided: BTreeSet<String>,
}

impl Modules<'_> {
    /// The module's text and whether it is a package, from where Python
    /// would import it first; `None` for what cannot be read here.
    fn source(&mut self, module: &str) -> Option<(String, bool, String)> {
        let rel = module.replace('.', "/");
        for root in &self.roots {
            for (file, package) in [
                (format!("{rel}.py"), false),
                (format!("{rel}/__init__.py"), true),
            ] {
                let Ok(path) = root.join(&file) else { continue };
                if let Some(EntryKind::File {
                    content: Content::HostFile(host),
                    size,
                }) = self.app.get(&path).map(|e| &e.kind)
                {
                    if *size > MAX_MODULE_BYTES {
                        return None;
                    }
                    let text = std::fs::read_to_string(host).ok()?;
                    return Some((text, package, "the app".to_owned()));
                }
            }
        }
        let top = module.split('.').next().unwrap_or(module);
        // Several packages may share a namespace package (`google`): each is tried.
        let owners: Vec<usize> = (0..self.packages.len())
            .filter(|&i| {
                let names = &self.packages[i].top_level;
                names.iter().any(|n| top_name(n) == Some(top))
            })
            .collect();
        let (package, index) = owners
            .into_iter()
            .find_map(|i| Some((i, self.find_in_wheel(i, &rel)?)))?;
        let content = match self.contents.entry(package) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(WheelContent::open(self.packages[package].wheel.as_ref()?).ok()?)
            }
        };
        let mut text = String::new();
        content
            .open(index)
            .ok()?
            .take(MAX_MODULE_BYTES)
            .read_to_string(&mut text)
            .ok()?;
        let is_package = self.is_package_in_wheel(package, &rel);
        Some((text, is_package, self.packages[package].label.clone()))
    }

    fn plan(&mut self, package: usize) -> Option<&LayerPlan> {
        let target = self.target;
        let wheel_path = self.packages[package].wheel.clone();
        self.plans
            .entry(package)
            .or_insert_with(|| {
                let path = wheel_path?;
                wheel::plan_install(&path, target).ok().map(|w| w.plan)
            })
            .as_ref()
    }

    /// The wheel entry of module file `rel` (`a/b`), as `a/b.py` or `a/b/__init__.py`.
    fn find_in_wheel(&mut self, package: usize, rel: &str) -> Option<usize> {
        let sp = self.target.site_packages();
        let plan = self.plan(package)?;
        for file in [format!("{rel}.py"), format!("{rel}/__init__.py")] {
            let path = sp.join(&file).ok()?;
            if let Some(EntryKind::File {
                content: Content::External(index),
                ..
            }) = plan.get(&path).map(|e| &e.kind)
            {
                return Some(*index);
            }
        }
        None
    }

    fn is_package_in_wheel(&mut self, package: usize, rel: &str) -> bool {
        let sp = self.target.site_packages();
        let Some(plan) = self.plan(package) else {
            return false;
        };
        sp.join(&format!("{rel}/__init__.py"))
            .is_ok_and(|p| plan.get(&p).is_some())
    }
}

/// `pkg` → `pkg`, `mod.py` → `mod`, `_x.cpython-311-x86_64-linux-gnu.so` →
/// `_x`; `None` for metadata (`x.dist-info`, `x.pth`).
fn top_name(entry: &str) -> Option<&str> {
    if entry.ends_with(".dist-info") || entry.ends_with(".data") || entry.ends_with(".pth") {
        return None;
    }
    entry.split('.').next()
}

/// What the walk from `app_module` finds no provider for.
pub fn undeclared(
    app_module: &str,
    app: &LayerPlan,
    roots: Vec<ImagePath>,
    packages: &[Package],
    target: &VenvTarget,
) -> Vec<Missing> {
    let mut provided: BTreeSet<String> = STDLIB.split_whitespace().map(str::to_owned).collect();
    for p in packages {
        provided.extend(
            p.top_level
                .iter()
                .filter_map(|n| top_name(n))
                .map(str::to_owned),
        );
    }
    for root in &roots {
        for (path, _) in app.entries() {
            if path.parent().as_ref() == Some(root) {
                provided.extend(top_name(path.file_name()).map(str::to_owned));
            }
        }
    }
    let mut modules = Modules {
        app,
        roots,
        packages,
        target,
        plans: HashMap::new(),
        contents: HashMap::new(),
        provided,
    };
    walk(&mut modules, app_module)
}

fn walk(modules: &mut Modules, app_module: &str) -> Vec<Missing> {
    let mut missing: BTreeMap<(String, String), Missing> = BTreeMap::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = prefixes(app_module);
    while let Some(module) = queue.pop() {
        if seen.len() >= MAX_MODULES || !seen.insert(module.clone()) {
            continue;
        }
        let Some((text, is_package, importer)) = modules.source(&module) else {
            continue;
        };
        // A module that changes `sys.path` (setuptools' pkg_resources puts its
        // vendored packages there) may import what is not installed by name.
        let path_changed = text.contains("sys.path");
        for (import, certain) in module_imports(&text, &module, is_package) {
            let top = import.split('.').next().unwrap_or_default().to_owned();
            if top.starts_with('_') || modules.provided.contains(&top) {
                queue.extend(prefixes(&import));
            } else if certain && !path_changed {
                missing
                    .entry((top.clone(), importer.clone()))
                    .or_insert(Missing {
                        module: top,
                        importer: importer.clone(),
                        from: module.clone(),
                    });
            }
        }
    }
    missing.into_values().collect()
}

/// `a.b.c` → `a`, `a.b`, `a.b.c`: what `import a.b.c` imports.
fn prefixes(module: &str) -> Vec<String> {
    let parts: Vec<&str> = module.split('.').collect();
    (1..=parts.len()).map(|n| parts[..n].join(".")).collect()
}

/// The one warning for what the walk found, with what to do.
pub fn warning(missing: &[Missing]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let items: Vec<String> = missing
        .iter()
        .map(|m| {
            let fix = match DISTRIBUTIONS.iter().find(|(module, _)| *module == m.module) {
                Some(("pkg_resources", _)) => "pkg_resources is part of setuptools, which pip-made images often have by accident and this one has not: add setuptools to the project's dependencies".to_owned(),
                Some((_, dist)) => format!("add {dist} to the project's dependencies"),
                None => "add the package that provides it to the project's dependencies".to_owned(),
            };
            format!("`{}` (imported by {} in {}): {fix}", m.module, m.importer, m.from)
        })
        .collect();
    Some(format!(
        "the app would import modules that nothing in the image provides, so it would fail at start: {}; then lock again",
        crate::text::summarise(&items, 5)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unconditional_top_level_imports_count() {
        let text = "\
from __future__ import annotations
import os, yaml as y
import a.b.c
from .sibling import thing
from .. import up
from pkg_resources import get_distribution
from typing import TYPE_CHECKING
try:
    import ujson
except ImportError:
    ujson = None
if TYPE_CHECKING:
    import mypy_stuff
def f():
    import inside
class C:
    import also_inside
";
        let got = module_imports(text, "pkg.sub.mod", false);
        assert_eq!(
            got,
            [
                ("os".to_string(), true),
                ("yaml".to_string(), true),
                ("a.b.c".to_string(), true),
                ("pkg.sub.sibling.thing".to_string(), false),
                ("pkg.sub.sibling".to_string(), true),
                ("pkg.up".to_string(), false),
                ("pkg".to_string(), true),
                ("pkg_resources.get_distribution".to_string(), false),
                ("pkg_resources".to_string(), true),
                ("typing.TYPE_CHECKING".to_string(), false),
                ("typing".to_string(), true),
            ]
        );
        // In a package's __init__, `.` is the package itself.
        assert_eq!(
            module_imports("from .core import x\n", "pkg", true)[1],
            ("pkg.core".to_string(), true)
        );
    }
}
