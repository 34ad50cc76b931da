//! What the image runs: `Entrypoint` and `Cmd` of the image config. By
//! default that is uvicorn from the venv, serving the settings' `app`; the
//! `entrypoint` and `cmd` settings replace it. [`crate::spec::Spec::command`]
//! is the one place the spec's settings become that command line, for the
//! image config and for every deploy output alike.

/// How uvicorn serves the app: the settings that make up its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uvicorn<'a> {
    /// The venv's absolute path in the image; uvicorn is its `bin/uvicorn`.
    pub venv: &'a str,
    /// `module.path:attr`.
    pub app: &'a str,
    /// `app` names a factory: uvicorn calls it for the app (`--factory`).
    pub factory: bool,
    /// `--app-dir`, relative to the working directory (src layouts).
    pub app_dir: Option<&'a str>,
    pub port: u16,
    pub workers: u32,
    pub proxy_headers: bool,
}

impl Uvicorn<'_> {
    /// The uvicorn command line, listening on every interface.
    pub fn command(&self) -> Vec<String> {
        let mut cmd = vec![
            format!("{}/bin/uvicorn", self.venv),
            self.app.to_string(),
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            self.port.to_string(),
            "--workers".into(),
            self.workers.to_string(),
        ];
        if self.factory {
            cmd.push("--factory".into());
        }
        if self.proxy_headers {
            cmd.push("--proxy-headers".into());
        }
        if let Some(dir) = self.app_dir {
            cmd.push("--app-dir".into());
            cmd.push(dir.to_string());
        }
        cmd
    }
}

/// `Entrypoint` and `Cmd` of the image config; `None` leaves the field out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrypointCmd {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
}

impl EntrypointCmd {
    /// With neither `entrypoint` nor `cmd` set, the Cmd is the uvicorn
    /// command and there is no entrypoint, so `run IMAGE python -c …` works as
    /// users of Python images expect. `cmd` alone replaces the command (no
    /// entrypoint); `entrypoint` alone runs with no Cmd; both are used as given.
    /// `default` is `None` only without an `app`, which the settings allow
    /// only with `cmd` or `entrypoint`.
    pub fn new(
        entrypoint: Option<Vec<String>>,
        cmd: Option<Vec<String>>,
        default: Option<&Uvicorn>,
    ) -> EntrypointCmd {
        match (entrypoint, cmd) {
            (None, None) => EntrypointCmd {
                entrypoint: None,
                cmd: default.map(Uvicorn::command),
            },
            (entrypoint, cmd) => EntrypointCmd { entrypoint, cmd },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Uvicorn = Uvicorn {
        venv: "/app/.venv",
        app: "main:app",
        factory: false,
        app_dir: None,
        port: 8000,
        workers: 1,
        proxy_headers: false,
    };

    #[test]
    fn default_command_runs_uvicorn_from_the_venv() {
        assert_eq!(
            DEFAULT.command(),
            [
                "/app/.venv/bin/uvicorn",
                "main:app",
                "--host",
                "0.0.0.0",
                "--port",
                "8000",
                "--workers",
                "1"
            ]
        );
        let u = Uvicorn {
            venv: "/opt/venv",
            port: 9000,
            workers: 3,
            proxy_headers: true,
            app_dir: Some("src"),
            factory: true,
            ..DEFAULT
        };
        assert_eq!(
            u.command(),
            [
                "/opt/venv/bin/uvicorn",
                "main:app",
                "--host",
                "0.0.0.0",
                "--port",
                "9000",
                "--workers",
                "3",
                "--factory",
                "--proxy-headers",
                "--app-dir",
                "src"
            ]
        );
    }

    #[test]
    fn overrides_replace_the_default_command() {
        let v = |s: &[&str]| Some(s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            EntrypointCmd::new(None, None, Some(&DEFAULT)),
            EntrypointCmd {
                entrypoint: None,
                cmd: Some(DEFAULT.command())
            }
        );
        assert_eq!(
            EntrypointCmd::new(None, v(&["python", "-m", "api"]), None),
            EntrypointCmd {
                entrypoint: None,
                cmd: v(&["python", "-m", "api"])
            }
        );
        assert_eq!(
            EntrypointCmd::new(v(&["/bin/run"]), None, Some(&DEFAULT)),
            EntrypointCmd {
                entrypoint: v(&["/bin/run"]),
                cmd: None
            }
        );
        assert_eq!(
            EntrypointCmd::new(v(&["/bin/run"]), v(&["--fast"]), None),
            EntrypointCmd {
                entrypoint: v(&["/bin/run"]),
                cmd: v(&["--fast"])
            }
        );
    }
}
