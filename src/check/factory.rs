//! `app = "m:create_app()"` names a factory, which uvicorn calls for the
//! app (`--factory`); `app = "m:app"` names the app itself. What the module
//! binds the name to, read without running it, tells a mix-up: an app
//! written with `()` would be called as a factory and fail at start; a
//! function of no arguments written without them is most likely a factory
//! (uvicorn guesses so too, with a warning of its own).

use super::app::logical_lines;
use super::CheckError;
use crate::layer::ImagePath;
use crate::spec::Spec;

/// What a module's top level binds a name to, where that can be seen.
#[derive(Debug, PartialEq, Eq)]
pub enum Shape {
    /// `NAME = FastAPI(…)` (or another app class): an ASGI app.
    App(&'static str),
    /// `def NAME(…)`, and whether it takes no required argument.
    Function { no_arguments: bool },
}

/// The ASGI application classes an `app` may be an instance of.
const APP_CLASSES: &[&str] = &["FastAPI", "Starlette", "Litestar"];

/// The first top-level binding of `name` in `text` that is a `def` or an
/// assignment of an app class; `None` when it is bound otherwise or not seen.
pub fn shape(text: &str, name: &str) -> Option<Shape> {
    for line in logical_lines(text) {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let stmt = line.trim();
        let def = stmt
            .strip_prefix("async ")
            .unwrap_or(stmt)
            .strip_prefix("def ");
        if let Some(rest) = def {
            let Some(params) = rest
                .strip_prefix(name)
                .and_then(|r| r.trim_start().strip_prefix('('))
            else {
                continue;
            };
            let params = params.split(')').next().unwrap_or_default();
            return Some(Shape::Function {
                no_arguments: no_required_arguments(params),
            });
        }
        let Some(rest) = stmt.strip_prefix(name) else {
            continue;
        };
        let rest = rest.trim_start();
        // `NAME = …` or `NAME: T = …`, not `NAME == …` or `NAME.x = …`.
        let value = match rest.strip_prefix(':') {
            Some(annotated) => annotated.split_once('=').map(|(_, v)| v),
            None => rest.strip_prefix('=').filter(|v| !v.starts_with('=')),
        };
        if let Some(value) = value {
            let callee = value.trim().split('(').next().unwrap_or_default().trim();
            let class = callee.rsplit('.').next().unwrap_or(callee);
            let known = APP_CLASSES.iter().find(|c| **c == class);
            if let Some(class) = known.filter(|_| value.contains('(')) {
                return Some(Shape::App(class));
            }
        }
    }
    None
}

/// `app`'s factory `()` against what the module binds the name to: an app
/// called as a factory fails at start (an error); a function of no
/// arguments named without `()` is most likely a factory (a warning).
pub(super) fn check(
    spec: &Spec,
    file: &str,
    path: &ImagePath,
    text: &str,
    attr: &str,
) -> Result<Option<String>, CheckError> {
    let (app, shown) = (
        spec.app.clone().unwrap_or_default(),
        spec.app_setting().unwrap_or_default(),
    );
    match (spec.app_factory, shape(text, attr)) {
        (true, Some(Shape::App(class))) => Err(CheckError::NotAFactory {
            file: file.to_owned(),
            app: shown,
            attr: attr.to_owned(),
            path: path.absolute(),
            class,
        }),
        (false, Some(Shape::Function { no_arguments: true })) => Ok(Some(format!(
            "{file}: app = {:?}: `{attr}` in {} is a function of no arguments; if it makes the app, write app = \"{}()\" so uvicorn calls it (--factory)",
            shown,
            path.absolute(),
            app
        ))),
        _ => Ok(None),
    }
}

/// Whether a parameter list (the text between the parentheses) can be
/// called with nothing: empty, or each parameter has a default or is `*`,
/// `*args`, `**kwargs` or `/`.
fn no_required_arguments(params: &str) -> bool {
    params.split(',').map(str::trim).all(|p| {
        p.is_empty()
            || p == "/"
            || p.starts_with('*')
            || p.split(':').next().unwrap_or(p).contains('=')
            || p.contains('=')
    })
}

#[cfg(test)]
mod tests {
    use super::super::app::check_app;
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn apps_and_functions_are_told_apart() {
        let cases: &[(&str, Option<Shape>)] = &[
            ("app = FastAPI()\n", Some(Shape::App("FastAPI"))),
            (
                "app: Starlette = starlette.applications.Starlette(routes=[])\n",
                Some(Shape::App("Starlette")),
            ),
            (
                "def app():\n    return FastAPI()\n",
                Some(Shape::Function { no_arguments: true }),
            ),
            (
                "async def app(scope, receive, send):\n    pass\n",
                Some(Shape::Function {
                    no_arguments: false,
                }),
            ),
            (
                "def app(settings=None, *, debug: bool = False, **kw) -> FastAPI:\n    pass\n",
                Some(Shape::Function { no_arguments: true }),
            ),
            (
                "def app(\n    settings: Settings,\n):\n    pass\n",
                Some(Shape::Function {
                    no_arguments: false,
                }),
            ),
            ("app = create_app()\n", None),
            ("def make():\n    app = FastAPI()\n", None),
            ("application = FastAPI()\n", None),
            ("app == FastAPI()\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(&shape(text, "app"), want, "{text}");
        }
    }

    #[test]
    fn a_factory_must_be_a_callable_and_an_app_must_not_be_written_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let plan = app_plan(
            dir.path(),
            &[(
                "svc.py",
                "from fastapi import FastAPI\napi = FastAPI()\ndef create_app():\n    return FastAPI()\n",
            )],
        );
        let base = NoBase(vec![]);
        let v = view(&plan, &[], &[], &base);
        let check = |app: &str| {
            check_app(
                &spec(dir.path(), &format!("app = \"{app}\"\n")),
                "imgbuild.toml",
                &v,
            )
        };
        assert_eq!(check("svc:create_app()").unwrap(), None);
        assert_eq!(check("svc:api").unwrap(), None);
        let e = check("svc:api()").unwrap_err().to_string();
        assert_eq!(e, "imgbuild.toml: app = \"svc:api()\": `api` in /app/svc.py is a FastAPI app, not a factory that makes one; write app = \"svc:api\" without the ()");
        let e = check("svc:make_app()").unwrap_err().to_string();
        assert!(
            e.contains("app = \"svc:make_app()\": /app/svc.py has no top-level `make_app`"),
            "{e}"
        );
        let w = check("svc:create_app").unwrap().unwrap();
        assert!(w.ends_with("is a function of no arguments; if it makes the app, write app = \"svc:create_app()\" so uvicorn calls it (--factory)"), "{w}");
    }
}
