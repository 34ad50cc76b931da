//! What `imgbuild init` reads out of a project, as pure functions over file
//! names and contents: the ASGI app, a health route, the console scripts and
//! a base image suggested by `requires-python`. No Python is run; a line-level
//! reading finds what a person skimming the code would find.

/// The ASGI application classes `init` recognises, as `NAME = Class(`.
pub const APP_CLASSES: &[&str] = &["FastAPI", "Starlette", "Litestar"];

/// Paths probed for health routes, in the order preferred.
pub const HEALTH_PATHS: &[&str] = &["/health", "/healthz"];

/// How an app candidate is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Made {
    /// `NAME = FastAPI(…)`.
    Direct,
    /// `NAME = create_app(…)`, a factory of the project.
    ByFactory(String),
    /// The factory itself, `app = "module:create_app()"`: nothing at the top
    /// level calls it, so uvicorn does (`--factory`).
    Factory,
}

/// A top-level `NAME = FastAPI(` (or Starlette / Litestar, or a factory's
/// call) in a module, or a factory function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCandidate {
    /// `module.path:attribute`, as uvicorn takes it.
    pub app: String,
    /// uvicorn's `--app-dir` (`src` for a src layout), relative to the project.
    pub app_dir: Option<String>,
    /// The file, relative to the project, with `/` separators.
    pub file: String,
    /// 1-based.
    pub line: usize,
    pub class: &'static str,
    pub made: Made,
}

impl AppCandidate {
    /// Where and how it was found, for `init`'s notes.
    pub fn place(&self) -> String {
        let at = format!("{}:{}", self.file, self.line);
        match &self.made {
            Made::Direct => format!("{} in {at}", self.class),
            Made::ByFactory(f) => format!("{} made by {f}() in {at}", self.class),
            Made::Factory => format!(
                "a factory of a {} in {at}; uvicorn calls it, --factory",
                self.class
            ),
        }
    }
}

/// A declared health route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthRoute {
    pub path: &'static str,
    pub file: String,
    pub line: usize,
}

/// The module path of a Python file (relative, `/`-separated), and the import
/// root it needs: `pkg/main.py` → (`pkg.main`, None); `src/pkg/main.py` →
/// (`pkg.main`, Some("src")); `pkg/__init__.py` → `pkg`. None when a part is
/// not a Python identifier (such a file cannot be imported by that name).
pub fn module_of(rel: &str) -> Option<(String, Option<String>)> {
    let stem = rel.strip_suffix(".py")?;
    let mut parts: Vec<&str> = stem.split('/').collect();
    let app_dir = if parts.len() > 1 && parts[0] == "src" {
        parts.remove(0);
        Some("src".to_string())
    } else {
        None
    };
    if parts.last() == Some(&"__init__") {
        parts.pop();
    }
    if parts.is_empty() || !parts.iter().all(|p| is_identifier(p)) {
        return None;
    }
    Some((parts.join("."), app_dir))
}

/// A Python identifier, ASCII or not (no keyword check: `class.py` is rare enough).
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Every top-level assignment of an ASGI app in `text` (the file `rel`).
pub fn find_apps(rel: &str, text: &str) -> Vec<AppCandidate> {
    let Some((module, app_dir)) = module_of(rel) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with(|c: char| c.is_whitespace()) {
            continue;
        }
        let Some((target, value)) = split_assignment(line) else {
            continue;
        };
        let Some(class) = app_class(value) else {
            continue;
        };
        out.push(AppCandidate {
            app: format!("{module}:{target}"),
            app_dir: app_dir.clone(),
            file: rel.to_string(),
            line: i + 1,
            class,
            made: Made::Direct,
        });
    }
    out
}

/// `NAME = VALUE` or `NAME: TYPE = VALUE` → (NAME, VALUE); not `==`, not augmented.
pub(super) fn split_assignment(line: &str) -> Option<(&str, &str)> {
    let eq = line.find('=')?;
    if line[eq + 1..].starts_with('=') {
        return None;
    }
    let target = line[..eq].trim_end();
    let target = match target.split_once(':') {
        Some((name, _annotation)) => name.trim_end(),
        None => target,
    };
    is_identifier(target).then(|| (target, line[eq + 1..].trim_start()))
}

/// `FastAPI(`, `fastapi.FastAPI(`, `starlette.applications.Starlette(` → the class.
pub(super) fn app_class(value: &str) -> Option<&'static str> {
    let call = value.split('(').next()?;
    if call.len() == value.len() {
        return None;
    }
    let name = call.trim_end().rsplit('.').next()?;
    APP_CLASSES.iter().copied().find(|c| *c == name)
}

/// Orders candidates best first: in the project's own package (the project name
/// with `-` and `.` as `_`), then shallower files, then the usual entry-module
/// names, then by path.
pub fn rank(candidates: &mut [AppCandidate], project_name: Option<&str>) {
    let package = project_name.map(|n| n.to_ascii_lowercase().replace(['-', '.'], "_"));
    let key = |c: &AppCandidate| {
        let module = c.app.split(':').next().unwrap_or_default().to_string();
        let in_package = package
            .as_deref()
            .is_some_and(|p| module == p || module.starts_with(&format!("{p}.")));
        let depth = module.matches('.').count();
        let last = module.rsplit('.').next().unwrap_or_default().to_string();
        let usual = ["main", "app", "asgi", "server", "api", "web"]
            .iter()
            .position(|n| *n == last)
            .unwrap_or(usize::MAX);
        // An app the code makes at import beats a factory left for uvicorn to call.
        let factory = c.made == Made::Factory;
        (factory, !in_package, depth, usual, c.file.clone(), c.line)
    };
    candidates.sort_by_key(key);
}

/// Health routes declared in `text`: a decorator such as `@app.get("/health")`,
/// `@router.get('/healthz')`, Litestar's `@get("/health")`, or Starlette's
/// `Route("/healthz", ...)`.
pub fn find_health_routes(rel: &str, text: &str) -> Vec<HealthRoute> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        let args: Vec<&str> = if let Some(rest) = line.strip_prefix('@') {
            // `@x.get(` / `@x.api_route(` / `@x.route(` / `@get(`
            rest.split_once('(')
                .filter(|(callee, _)| {
                    let method = callee.rsplit('.').next().unwrap_or(callee);
                    matches!(method, "get" | "route" | "api_route")
                })
                .map(|(_, arg)| arg)
                .into_iter()
                .collect()
        } else {
            line.match_indices("Route(")
                .map(|(at, m)| &line[at + m.len()..])
                .collect()
        };
        for arg in args {
            let arg = arg.trim_start();
            let arg = arg.strip_prefix("path=").unwrap_or(arg);
            if let Some(path) = HEALTH_PATHS.iter().copied().find(|p| {
                arg.starts_with(&format!("\"{p}\"")) || arg.starts_with(&format!("'{p}'"))
            }) {
                out.push(HealthRoute {
                    path,
                    file: rel.to_string(),
                    line: i + 1,
                });
            }
        }
    }
    out
}

/// What `pyproject.toml` says that `init` uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProjectInfo {
    pub name: Option<String>,
    pub requires_python: Option<String>,
    /// `[project.scripts]`, name → `module:function`, sorted by name.
    pub scripts: Vec<(String, String)>,
    /// Whether `[tool.imgbuild]` is there already.
    pub has_tool_table: bool,
}

/// Reads the parts of a pyproject.toml that `init` uses; a TOML error is the
/// caller's to report.
pub fn project_info(text: &str) -> Result<ProjectInfo, toml::de::Error> {
    let doc: toml::Table = text.parse()?;
    let project = doc.get("project").and_then(|p| p.as_table());
    let string = |key: &str| {
        project
            .and_then(|p| p.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let scripts = project
        .and_then(|p| p.get("scripts"))
        .and_then(|s| s.as_table())
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(ProjectInfo {
        name: string("name"),
        requires_python: string("requires-python"),
        scripts,
        has_tool_table: doc
            .get("tool")
            .and_then(|t| t.as_table())
            .is_some_and(|t| t.contains_key("imgbuild")),
    })
}

/// The Python `major.minor` a `requires-python` asks for at least:
/// `>=3.11` → 3.11, `~=3.12.1` → 3.12, `==3.11.*` → 3.11, `>3.10` → 3.11.
/// None when it sets no lower bound.
pub fn min_python(requires_python: &str) -> Option<(u32, u32)> {
    requires_python
        .split(',')
        .filter_map(|clause| {
            let clause = clause.trim();
            let (op, version) = ["~=", ">=", "==", ">"]
                .iter()
                .find_map(|op| clause.strip_prefix(op).map(|v| (*op, v.trim())))?;
            let mut parts = version.split('.');
            let major: u32 = parts.next()?.parse().ok()?;
            let minor: u32 = parts
                .next()
                .map(|m| m.trim_end_matches(".*").parse().ok())
                .unwrap_or(Some(0))?;
            let strictly_above_minor = op == ">" && parts.next().is_none();
            Some((major, minor + u32::from(strictly_above_minor)))
        })
        .max()
}

/// The newest Python `major.minor` a `requires-python` allows: `<3.13` →
/// 3.12, `<=3.12.4` → 3.12, `==3.11.*` → 3.11, `~=3.12.1` → 3.12, `<4` →
/// any 3.x. None when it sets no upper bound.
pub fn max_python(requires_python: &str) -> Option<(u32, u32)> {
    requires_python
        .split(',')
        .filter_map(|clause| {
            let clause = clause.trim();
            let (op, version) = ["<=", "<", "~=", "===", "=="]
                .iter()
                .find_map(|op| clause.strip_prefix(op).map(|v| (*op, v.trim())))?;
            let parts: Vec<&str> = version.trim_end_matches(".*").split('.').collect();
            let major: u32 = parts.first()?.parse().ok()?;
            let minor: Option<u32> = parts.get(1).and_then(|m| m.parse().ok());
            let below_minor = op == "<" && parts.get(2).is_none_or(|p| p.parse() == Ok(0u32));
            match (op, minor) {
                // `~=3.12` allows any 3.x from 3.12 on; `~=3.12.1` stays in 3.12.
                ("~=", _) if parts.len() < 3 => None,
                (_, None) if op == "<" => Some((major.checked_sub(1)?, u32::MAX)),
                (_, None) => Some((major, u32::MAX)),
                (_, Some(0)) if below_minor => Some((major.checked_sub(1)?, u32::MAX)),
                (_, Some(m)) if below_minor => Some((major, m - 1)),
                (_, Some(m)) => Some((major, m)),
            }
        })
        .min()
}

/// The base `init` suggests, and whether it fits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseSuggestion {
    pub base: String,
    /// False when no Python that `requires-python` allows is one imgbuild
    /// compiles bytecode for: `base` is then the lowest one it allows.
    pub buildable: bool,
}

/// The Python used when `requires-python` sets no lower bound.
const DEFAULT_PYTHON: (u32, u32) = (3, 12);

/// The base `init` suggests for a `requires-python` (None: no bound given):
/// the lowest Python it allows that imgbuild builds with bytecode on. The
/// python image's trixie variant, since trixie is the Debian release every
/// 3.9 to 3.15 image has a tag for (bookworm's stop before 3.15).
pub fn suggested_base(requires_python: Option<&str>) -> BaseSuggestion {
    use crate::python::bytecode::{NEWEST_KNOWN, OLDEST_TESTED};
    let lower = requires_python.and_then(min_python);
    let upper = requires_python.and_then(max_python);
    let mut pick = lower.unwrap_or(DEFAULT_PYTHON).max(OLDEST_TESTED);
    if let Some(u) = upper.filter(|u| lower.is_none() && pick > *u) {
        pick = u.max(OLDEST_TESTED);
    }
    let buildable = pick <= NEWEST_KNOWN && upper.is_none_or(|u| pick <= u);
    let (major, minor) = if buildable {
        pick
    } else {
        lower.or(upper).unwrap_or(pick)
    };
    BaseSuggestion {
        base: format!("python:{major}.{minor}-slim-trixie"),
        buildable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_follow_flat_and_src_layouts() {
        assert_eq!(module_of("main.py"), Some(("main".into(), None)));
        assert_eq!(
            module_of("pkg/web/app.py"),
            Some(("pkg.web.app".into(), None))
        );
        assert_eq!(
            module_of("src/pkg/main.py"),
            Some(("pkg.main".into(), Some("src".into())))
        );
        assert_eq!(module_of("pkg/__init__.py"), Some(("pkg".into(), None)));
        // A top-level src.py is a module, not a layout.
        assert_eq!(module_of("src.py"), Some(("src".into(), None)));
        assert_eq!(module_of("my-dir/main.py"), None, "not importable");
        assert_eq!(module_of("README.md"), None);
    }

    #[test]
    fn finds_top_level_app_assignments_only() {
        let text = "\
from fastapi import FastAPI
import starlette.applications

app = FastAPI(title=\"x\")
api: FastAPI = FastAPI()
web=starlette.applications.Starlette(routes=[])
if True:
    inner = FastAPI()
def make():
    return Litestar([])
other = FastAPIish()
compare == FastAPI()
handler = FastAPI
";
        let found = find_apps("svc/main.py", text);
        let apps: Vec<_> = found
            .iter()
            .map(|c| (c.app.as_str(), c.line, c.class))
            .collect();
        assert_eq!(
            apps,
            [
                ("svc.main:app", 4, "FastAPI"),
                ("svc.main:api", 5, "FastAPI"),
                ("svc.main:web", 6, "Starlette"),
            ]
        );
        let src = find_apps(
            "src/svc/asgi.py",
            "application = Litestar(route_handlers=[])\n",
        );
        assert_eq!(src[0].app, "svc.asgi:application");
        assert_eq!(src[0].app_dir.as_deref(), Some("src"));
        assert_eq!(src[0].class, "Litestar");
    }

    #[test]
    fn ranking_prefers_the_projects_package_then_shallow_usual_modules() {
        let mut c = [
            find_apps("tools/debug/app.py", "app = FastAPI()\n"),
            find_apps("zzz/main.py", "app = FastAPI()\n"),
            find_apps("my_service/extra/app.py", "app = FastAPI()\n"),
            find_apps("my_service/main.py", "app = FastAPI()\n"),
            find_apps("my_service/admin.py", "app = FastAPI()\n"),
        ]
        .concat();
        rank(&mut c, Some("My-Service"));
        let order: Vec<_> = c.iter().map(|c| c.app.as_str()).collect();
        assert_eq!(
            order,
            [
                "my_service.main:app",
                "my_service.admin:app",
                "my_service.extra.app:app",
                "zzz.main:app",
                "tools.debug.app:app",
            ]
        );
    }

    #[test]
    fn finds_declared_health_routes() {
        let text = "\
@app.get(\"/health\")
def health(): ...
    @router.get('/healthz', include_in_schema=False)
@app.get(\"/healthcheck\")
@app.post(\"/health\")
routes = [Route(\"/\", home), Route(\"/healthz\", endpoint=ok)]
@get(path=\"/health\")
";
        let found: Vec<_> = find_health_routes("m.py", text)
            .into_iter()
            .map(|h| (h.path, h.line))
            .collect();
        assert_eq!(
            found,
            [
                ("/health", 1),
                ("/healthz", 3),
                ("/healthz", 6),
                ("/health", 7)
            ]
        );
    }

    #[test]
    fn reads_name_python_and_scripts_from_pyproject() {
        let info = project_info(
            "[project]\nname = \"orders\"\nrequires-python = \">=3.11\"\n\n[project.scripts]\norders-migrate = \"orders.migrate:main\"\norders-cli = \"orders.cli:run\"\n\n[tool.imgbuild]\nbase = \"b\"\n",
        )
        .unwrap();
        assert_eq!(info.name.as_deref(), Some("orders"));
        assert_eq!(info.requires_python.as_deref(), Some(">=3.11"));
        assert_eq!(
            info.scripts,
            [
                ("orders-cli".into(), "orders.cli:run".into()),
                ("orders-migrate".into(), "orders.migrate:main".into()),
            ]
        );
        assert!(info.has_tool_table);
        assert_eq!(project_info("").unwrap(), ProjectInfo::default());
        assert!(project_info("[project\n").is_err());
    }

    #[test]
    fn base_suggestion_takes_the_lowest_python_allowed() {
        assert_eq!(min_python(">=3.11"), Some((3, 11)));
        assert_eq!(min_python(">=3.10, <3.13"), Some((3, 10)));
        assert_eq!(min_python("~=3.12.1"), Some((3, 12)));
        assert_eq!(min_python("==3.11.*"), Some((3, 11)));
        assert_eq!(min_python(">3.10"), Some((3, 11)));
        assert_eq!(min_python(">3.10.2"), Some((3, 10)));
        assert_eq!(min_python("<3.13"), None);
        let base = |r: Option<&str>| suggested_base(r).base;
        assert_eq!(base(Some(">=3.11")), "python:3.11-slim-trixie");
        assert_eq!(base(None), "python:3.12-slim-trixie");
        assert_eq!(base(Some("<4")), "python:3.12-slim-trixie");
        assert_eq!(base(Some(">=3.14")), "python:3.14-slim-trixie");
        assert_eq!(base(Some(">=3.15")), "python:3.15-slim-trixie");
    }

    #[test]
    fn the_upper_bound_is_the_newest_python_allowed() {
        assert_eq!(max_python("<3.13"), Some((3, 12)));
        assert_eq!(max_python("<3.13.0"), Some((3, 12)));
        assert_eq!(max_python("<3.13.2"), Some((3, 13)));
        assert_eq!(max_python("<=3.12.4"), Some((3, 12)));
        assert_eq!(max_python(">=3.9, <3.11"), Some((3, 10)));
        assert_eq!(max_python("==3.11.*"), Some((3, 11)));
        assert_eq!(max_python("~=3.12.1"), Some((3, 12)));
        assert_eq!(max_python("~=3.12"), None);
        assert_eq!(max_python("<4"), Some((3, u32::MAX)));
        assert_eq!(max_python(">=3.10"), None);
    }

    #[test]
    fn only_pythons_imgbuild_builds_with_bytecode_are_suggested() {
        let s = |r: &str| suggested_base(Some(r));
        // Below 3.9 the lowest one it builds, when the project allows it.
        assert_eq!(s(">=3.8").base, "python:3.9-slim-trixie");
        assert!(s(">=3.8").buildable);
        // No lower bound: the default, unless the upper bound is below it.
        assert_eq!(s("<3.11").base, "python:3.10-slim-trixie");
        assert_eq!(s("<3.15,>=3.13").base, "python:3.13-slim-trixie");
        // Nothing imgbuild builds fits: the project's own, marked so.
        for r in [">=3.16", "==3.8.*", "<3.9"] {
            assert!(!s(r).buildable, "{r}");
        }
        assert_eq!(s(">=3.16").base, "python:3.16-slim-trixie");
        assert_eq!(s("==3.8.*").base, "python:3.8-slim-trixie");
        assert_eq!(s("<3.9").base, "python:3.8-slim-trixie");
    }
}
