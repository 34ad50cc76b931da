//! App factories, as `imgbuild init` finds them: a top-level function that
//! builds the ASGI app (`def create_app() -> FastAPI:`, or one whose body
//! has `return FastAPI(` or `app = FastAPI(`), and the module-level
//! `app = create_app()` that calls one. Most real projects make their app
//! this way; a module-level `NAME = FastAPI(` alone misses them.

use super::detect::{app_class, module_of, split_assignment, AppCandidate, Made};
use std::collections::BTreeMap;

/// A top-level function that returns an ASGI app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Factory {
    pub name: String,
    pub class: &'static str,
    /// Callable with no argument, as uvicorn's `--factory` calls it.
    pub no_arguments: bool,
    /// 1-based line of its `def`.
    pub line: usize,
}

/// The factories defined at the top level of `text`.
pub fn find_factories(text: &str) -> Vec<Factory> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let def = line
            .strip_prefix("async ")
            .unwrap_or(line)
            .strip_prefix("def ");
        let Some(rest) = def else {
            i += 1;
            continue;
        };
        let start = i;
        // The header, over as many lines as its parentheses take.
        let mut header = rest.to_string();
        while depth(&header) > 0 && i + 1 < lines.len() {
            i += 1;
            header.push(' ');
            header.push_str(lines[i].trim());
        }
        i += 1;
        let body_start = i;
        while i < lines.len() && (lines[i].trim().is_empty() || lines[i].starts_with([' ', '\t'])) {
            i += 1;
        }
        if let Some(f) = factory(&header, &lines[body_start..i], start + 1) {
            out.push(f);
        }
    }
    out
}

/// Parenthesis depth at the end of `s`.
fn depth(s: &str) -> i32 {
    s.chars().fold(0, |d, c| match c {
        '(' => d + 1,
        ')' => d - 1,
        _ => d,
    })
}

/// The factory a `def` header (after `def `) and body make, if it is one.
fn factory(header: &str, body: &[&str], line: usize) -> Option<Factory> {
    let (name, rest) = header.split_once('(')?;
    let name = name.trim();
    let close = rest.rfind(')')?;
    let (params, after) = (&rest[..close], &rest[close + 1..]);
    let returns = after.split_once("->").map(|(_, r)| {
        r.trim()
            .trim_end_matches(':')
            .trim()
            .trim_matches(['"', '\''])
    });
    let annotated = returns.and_then(|r| {
        let last = r.rsplit('.').next().unwrap_or(r);
        super::detect::APP_CLASSES
            .iter()
            .copied()
            .find(|c| *c == last)
    });
    let built = body.iter().find_map(|l| {
        let l = l.trim();
        match l.strip_prefix("return ") {
            Some(value) => app_class(value),
            None => split_assignment(l).and_then(|(_, value)| app_class(value)),
        }
    });
    let class = annotated.or(built)?;
    Some(Factory {
        name: name.to_string(),
        class,
        no_arguments: no_required_arguments(params),
        line,
    })
}

/// Whether a parameter list can be called with nothing.
fn no_required_arguments(params: &str) -> bool {
    params
        .split(',')
        .map(str::trim)
        .all(|p| p.is_empty() || p == "/" || p.starts_with('*') || p.contains('='))
}

/// The apps made through factories in `sources` (relative path, text): a
/// top-level `NAME = f(…)` where `f` is a factory of the project (any
/// module), and each factory callable with no argument that no such
/// assignment uses, as `module:f()`.
pub fn factory_apps(sources: &[(String, String)]) -> Vec<AppCandidate> {
    let factories: Vec<(String, Factory)> = sources
        .iter()
        .flat_map(|(rel, text)| {
            find_factories(text)
                .into_iter()
                .map(move |f| (rel.clone(), f))
        })
        .collect();
    let by_name: BTreeMap<&str, &Factory> = factories
        .iter()
        .map(|(_, f)| (f.name.as_str(), f))
        .collect();
    let mut out = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (rel, text) in sources {
        let Some((module, app_dir)) = module_of(rel) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if line.starts_with(|c: char| c.is_whitespace()) {
                continue;
            }
            let Some((target, value)) = split_assignment(line) else {
                continue;
            };
            let callee = value.split('(').next().unwrap_or_default().trim();
            let callee = callee.rsplit('.').next().unwrap_or(callee);
            let Some(f) = by_name.get(callee).filter(|_| value.contains('(')) else {
                continue;
            };
            used.insert(f.name.clone());
            out.push(AppCandidate {
                app: format!("{module}:{target}"),
                app_dir: app_dir.clone(),
                file: rel.clone(),
                line: i + 1,
                class: f.class,
                made: Made::ByFactory(f.name.clone()),
            });
        }
    }
    for (rel, f) in &factories {
        let Some((module, app_dir)) = module_of(rel) else {
            continue;
        };
        if f.no_arguments && !used.contains(&f.name) {
            out.push(AppCandidate {
                app: format!("{module}:{}()", f.name),
                app_dir,
                file: rel.clone(),
                line: f.line,
                class: f.class,
                made: Made::Factory,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_that_return_an_app_are_factories() {
        let text = "\
from fastapi import FastAPI

def create_app() -> FastAPI:
    return build()

async def get_application(
    settings: Settings | None = None,
) -> \"FastAPI\":
    ...

def create_application(settings):
    application = FastAPI(title=settings.name)
    return application

def make_starlette():
    return Starlette(routes=[])

def helper():
    return 1

class C:
    def create_app(self):
        return FastAPI()
";
        let found: Vec<_> = find_factories(text)
            .into_iter()
            .map(|f| (f.name, f.class, f.no_arguments, f.line))
            .collect();
        assert_eq!(
            found,
            [
                ("create_app".to_string(), "FastAPI", true, 3),
                ("get_application".to_string(), "FastAPI", true, 6),
                ("create_application".to_string(), "FastAPI", false, 11),
                ("make_starlette".to_string(), "Starlette", true, 15),
            ]
        );
    }

    #[test]
    fn module_level_calls_of_a_factory_are_apps_and_unused_factories_are_offered() {
        let sources = vec![
            (
                "app/core/factory.py".to_string(),
                "def get_application() -> FastAPI:\n    return FastAPI()\n\ndef create_admin():\n    return Starlette()\n".to_string(),
            ),
            (
                "app/main.py".to_string(),
                "from app.core.factory import get_application\n\napp = get_application()\nif __name__ == \"__main__\":\n    other = get_application()\n".to_string(),
            ),
        ];
        let found: Vec<_> = factory_apps(&sources)
            .into_iter()
            .map(|c| (c.app, c.line, c.made))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "app.main:app".to_string(),
                    3,
                    Made::ByFactory("get_application".into())
                ),
                (
                    "app.core.factory:create_admin()".to_string(),
                    4,
                    Made::Factory
                ),
            ]
        );
    }
}
