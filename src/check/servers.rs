//! The servers imgbuild knows by their console script: the ASGI servers that
//! run an `app` (uvicorn, hypercorn, …) and the packaged servers that start
//! themselves (`phoenix serve`, `jupyverse`, …). The script's name tells
//! which packages can provide it, which the lock alone can answer before any
//! wheel is fetched (`check::scripts::check_server_locked`); `imgbuild init`
//! writes a packaged server's command for a project that has no app of its
//! own. Pure data: nothing here reads a file.

/// A console script that starts an HTTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server {
    pub script: &'static str,
    /// The distributions that install `script` (PEP 503 names), the usual one first.
    pub packages: &'static [&'static str],
    /// What `init` writes as `cmd`, listening on all interfaces at `port`,
    /// with any state under the image user's HOME (`/home/app`); empty for
    /// the ASGI servers, which need an `app` (imgbuild's default command).
    pub cmd: &'static [&'static str],
    pub port: u16,
    /// What it serves, for `init`'s notes.
    pub what: &'static str,
}

const fn asgi(script: &'static str, packages: &'static [&'static str]) -> Server {
    Server {
        script,
        packages,
        cmd: &[],
        port: 8000,
        what: "an ASGI server",
    }
}

/// Every server known by its script. A packaged server's `cmd` was run as
/// written by `scripts/real-servers.sh` (docs/projects.md has the figures).
pub const SERVERS: &[Server] = &[
    asgi("uvicorn", &["uvicorn"]),
    asgi("hypercorn", &["hypercorn"]),
    asgi("gunicorn", &["gunicorn"]),
    asgi("granian", &["granian"]),
    asgi("daphne", &["daphne"]),
    Server {
        script: "datasette",
        packages: &["datasette"],
        // A database of its own in HOME (`--create`), and `--root`, which its
        // write API needs: the root actor gets every permission, through the
        // sign-in URL it logs at start or a token signed with DATASETTE_SECRET
        // (`datasette create-token root`).
        cmd: &[
            "datasette",
            "serve",
            "/home/app/data.db",
            "--create",
            "--root",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
        ],
        port: 8000,
        what: "Datasette (data publishing), on a database in HOME that it creates (add your files to `cmd`); `--root` lets the root actor write (the sign-in URL in its log, or `datasette create-token root` with DATASETTE_SECRET in `env`)",
    },
    Server {
        script: "phoenix",
        packages: &["arize-phoenix"],
        cmd: &["phoenix", "serve"],
        port: 6006,
        what: "Arize Phoenix (tracing), on its own port 6006, its state in ~/.phoenix",
    },
    Server {
        script: "prefect",
        packages: &["prefect"],
        cmd: &[
            "prefect", "server", "start", "--host", "0.0.0.0", "--port", "8000",
        ],
        port: 8000,
        what: "the Prefect server (orchestration), its database in ~/.prefect",
    },
    Server {
        script: "mlflow",
        packages: &["mlflow", "mlflow-skinny"],
        cmd: &[
            "mlflow",
            "server",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
            "--backend-store-uri",
            "sqlite:////home/app/mlflow.db",
            "--artifacts-destination",
            "/home/app/mlartifacts",
        ],
        port: 8000,
        what: "the MLflow tracking server, its store in HOME (the working directory is read-only)",
    },
    Server {
        script: "marimo",
        packages: &["marimo"],
        cmd: &[
            "marimo",
            "edit",
            "/home/app",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
            "--headless",
            "--no-token",
        ],
        port: 8000,
        what: "the marimo notebook editor, on the notebooks in HOME, without a token (put it behind your own authentication)",
    },
    Server {
        script: "jupyverse",
        packages: &["jupyverse"],
        // Its contents are the working directory's, which is read-only: HOME instead.
        cmd: &[
            "sh",
            "-c",
            "cd /home/app && exec jupyverse --host 0.0.0.0 --port 8000",
        ],
        port: 8000,
        what: "Jupyverse (notebooks), on the notebooks in HOME",
    },
    Server {
        script: "chroma",
        packages: &["chromadb"],
        cmd: &[
            "chroma",
            "run",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
            "--path",
            "/home/app/chroma",
            "--log-path",
            "/home/app/chroma.log",
        ],
        port: 8000,
        what: "the Chroma vector database, its data and log in HOME",
    },
    Server {
        script: "dagster-webserver",
        packages: &["dagster-webserver"],
        // It makes a temporary DAGSTER_HOME in the working directory, which is read-only.
        cmd: &[
            "sh",
            "-c",
            "cd /home/app && exec dagster-webserver -h 0.0.0.0 -p 8000 --empty-workspace",
        ],
        port: 8000,
        what: "the Dagster webserver (orchestration); with an empty workspace: replace `--empty-workspace` by `-f defs.py` or `-m MODULE` for your definitions",
    },
    Server {
        script: "litellm",
        packages: &["litellm"],
        cmd: &["litellm", "--host", "0.0.0.0", "--port", "8000"],
        port: 8000,
        what: "the LiteLLM proxy (LLM gateway); it needs LITELLM_MASTER_KEY in `env` (a secret) and `--config FILE` for your models",
    },
    Server {
        script: "dstack",
        packages: &["dstack"],
        cmd: &["dstack", "server", "--host", "0.0.0.0", "--port", "8000"],
        port: 8000,
        what: "the dstack server (GPU orchestration), its state in ~/.dstack; it runs git and ssh, which the base must have (Debian: git, openssh-client)",
    },
];

/// The server whose script is `name` (a bare name, not a path).
pub fn by_script(name: &str) -> Option<&'static Server> {
    SERVERS.iter().find(|s| s.script == name)
}

/// The packaged server a distribution provides, if imgbuild knows one.
pub fn by_package(name: &str) -> Option<&'static Server> {
    SERVERS.iter().find(|s| {
        !s.cmd.is_empty()
            && s.packages
                .first()
                .is_some_and(|p| crate::lock::same_name(p, name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packaged_server_listens_on_all_interfaces_at_its_port() {
        for s in SERVERS.iter().filter(|s| !s.cmd.is_empty()) {
            let line = s.cmd.join(" ");
            assert!(
                s.cmd[0] == s.script || s.cmd[2].contains(&format!("exec {} ", s.script)),
                "{line}"
            );
            let on_port = line.contains(&format!("--port {}", s.port))
                || line.contains(&format!("-p {}", s.port))
                || s.script == "phoenix";
            assert!(on_port, "{line}");
            assert!(line.contains("0.0.0.0") || s.script == "phoenix", "{line}");
            assert!(
                !line.contains("/app/") || line.contains("/home/app"),
                "{line}"
            );
        }
    }

    #[test]
    fn datasette_serves_a_database_in_home_that_its_root_actor_can_write() {
        // Its write API (1.0 alphas) needs a mutable database, which a server with
        // no file has not (`_memory` is read-only), and `--root` for the root
        // actor's tokens to have the permission.
        let cmd = by_package("datasette").unwrap().cmd;
        assert_eq!(cmd[..3], ["datasette", "serve", "/home/app/data.db"]);
        assert!(
            cmd.contains(&"--create") && cmd.contains(&"--root"),
            "{cmd:?}"
        );
    }

    #[test]
    fn scripts_and_packages_are_looked_up_by_name() {
        assert_eq!(by_script("phoenix").unwrap().packages, ["arize-phoenix"]);
        assert_eq!(by_script("uvicorn").unwrap().cmd, [] as [&str; 0]);
        assert!(by_script("serve").is_none());
        assert_eq!(by_package("Arize_Phoenix").unwrap().script, "phoenix");
        // mlflow-skinny provides the script too, but it is not the package to add.
        assert_eq!(by_package("mlflow").unwrap().script, "mlflow");
        assert!(by_package("mlflow-skinny").is_none());
        // An ASGI server is not a server that starts itself.
        assert!(by_package("uvicorn").is_none());
    }
}
