//! The container engine `imgbuild run` drives: podman, or docker. Only the
//! command lines differ; what the containers look like is the
//! [`Server`](crate::deploy::server::Server) the deploy outputs are written
//! from.
//!
//! Every engine process is started in a process group of its own, so the
//! terminal's Ctrl-C reaches imgbuild alone, which then stops and removes the
//! containers itself instead of racing the engine's own signal handling.

use crate::deploy::server::Server;
use crate::output::{archive, layout, BuildResult};
use crate::store::Store;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("neither podman nor docker answers here; install podman (apt-get install podman) or start docker, or name one with --engine")]
    NoEngine,
    #[error("--engine {given:?}: expected auto, podman or docker")]
    Unknown { given: String },
    #[error("`{command}` failed ({status}){}", tail(.stderr))]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot start {program}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the image for {program}")]
    Write {
        program: &'static str,
        #[source]
        source: crate::output::OutputError,
    },
}

/// The last line the engine printed on stderr, which says what went wrong.
fn tail(stderr: &str) -> String {
    match stderr.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!(": {}", line.trim()),
        None => String::new(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Podman,
    Docker,
}

impl Engine {
    /// `auto` takes podman when it answers (daemonless, and what the systemd
    /// output runs with), else docker when its daemon answers.
    pub fn find(choice: &str) -> Result<Engine, EngineError> {
        let answers = |engine: Engine, args: &[&str]| {
            engine
                .command()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        match choice {
            "podman" => Ok(Engine::Podman),
            "docker" => Ok(Engine::Docker),
            "auto" if answers(Engine::Podman, &["version"]) => Ok(Engine::Podman),
            "auto" if answers(Engine::Docker, &["version"]) => Ok(Engine::Docker),
            "auto" => Err(EngineError::NoEngine),
            other => Err(EngineError::Unknown {
                given: other.to_string(),
            }),
        }
    }

    pub fn program(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        }
    }

    /// The engine's command, in its own process group, reading nothing.
    fn command(self) -> Command {
        let mut cmd = Command::new(self.program());
        cmd.process_group(0).stdin(Stdio::null());
        cmd
    }

    /// Runs `args` to completion; its stdout, or the failure with its stderr.
    fn output(self, args: &[String], cwd: Option<&Path>) -> Result<String, EngineError> {
        let mut cmd = self.command();
        cmd.args(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let out = cmd.output().map_err(|source| EngineError::Spawn {
            program: self.program(),
            source,
        })?;
        if !out.status.success() {
            return Err(EngineError::Failed {
                command: format!("{} {}", self.program(), args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Puts the built image into the engine's storage as `localhost/imgbuild/NAME:latest`
    /// and returns its id. podman pulls it from an OCI layout in the cache, which
    /// reads only the layers it lacks, so a rebuilt app layer is all a rebuild
    /// costs; the layout's path must be given relative (podman names the image
    /// after it, and refuses a path with a dot directory such as ~/.cache).
    /// docker loads a docker-archive.
    pub fn load(
        self,
        result: &BuildResult,
        store: &Store,
        epoch: u64,
        name: &str,
    ) -> Result<String, EngineError> {
        let work = store.root().join("run");
        let write = |source| EngineError::Write {
            program: self.program(),
            source,
        };
        match self {
            Engine::Podman => {
                let dir = work.join("imgbuild").join(name);
                layout::write_oci_layout(result, &dir, "latest", store).map_err(write)?;
                let id = self.output(
                    &[
                        "pull".into(),
                        "-q".into(),
                        format!("oci:imgbuild/{name}:latest"),
                    ],
                    Some(&work),
                )?;
                Ok(id.lines().last().unwrap_or_default().to_string())
            }
            Engine::Docker => {
                let _ = std::fs::create_dir_all(&work);
                let file = work.join(format!("{name}.tar"));
                let reference = image_name(name);
                archive::write_docker_archive(result, &file, &reference, store, epoch)
                    .map_err(write)?;
                self.output(
                    &[
                        "load".into(),
                        "-q".into(),
                        "-i".into(),
                        file.display().to_string(),
                    ],
                    None,
                )?;
                self.output(
                    &[
                        "image".into(),
                        "inspect".into(),
                        "--format={{.Id}}".into(),
                        reference,
                    ],
                    None,
                )
            }
        }
    }

    /// Runs the init step to completion, its output on ours.
    pub fn run_init(
        self,
        server: &Server,
        container: &str,
        env: &[String],
    ) -> Result<(), EngineError> {
        let Some(init) = &server.init else {
            return Ok(());
        };
        let mut args = vec![
            "run".to_string(),
            "--rm".into(),
            format!("--name={container}"),
        ];
        args.extend(server.run_flags(false, &server.name));
        args.extend(env.iter().cloned());
        args.push(server.image.clone());
        args.extend(init.iter().cloned());
        let status = self
            .command()
            .args(&args)
            .status()
            .map_err(|source| EngineError::Spawn {
                program: self.program(),
                source,
            })?;
        match status.success() {
            true => Ok(()),
            false => Err(EngineError::Failed {
                command: format!("{} {}", self.program(), args.join(" ")),
                status: status.to_string(),
                stderr: String::new(),
            }),
        }
    }

    /// Starts the app in the foreground of a child process, its output on ours;
    /// `command` replaces the image's when not empty.
    pub fn start_app(
        self,
        server: &Server,
        env: &[String],
        command: &[String],
    ) -> Result<Child, EngineError> {
        let mut args = vec![
            "run".to_string(),
            "--rm".into(),
            format!("--name={}", server.name),
        ];
        args.extend(server.run_flags(true, &server.name));
        args.extend(server.app_flags());
        args.extend(env.iter().cloned());
        args.push(server.image.clone());
        match command.is_empty() {
            true => args.extend(server.command_args()),
            false => args.extend(command.iter().cloned()),
        }
        self.command()
            .args(&args)
            .spawn()
            .map_err(|source| EngineError::Spawn {
                program: self.program(),
                source,
            })
    }

    /// Stops a container (SIGTERM, then SIGKILL after `seconds`).
    pub fn stop(self, container: &str, seconds: u32) {
        let _ = self.output(
            &["stop".into(), format!("--time={seconds}"), container.into()],
            None,
        );
    }

    /// Renames a container, so that its name is free for the next one while
    /// its own `run --rm` still removes it (which takes podman longer than
    /// stopping it).
    pub fn rename(self, container: &str, new_name: &str) {
        let _ = self.output(&["rename".into(), container.into(), new_name.into()], None);
    }

    /// Removes containers and volumes, and an image that no name points to
    /// any more, whatever is left of them; failures (already gone, in use)
    /// are not errors.
    pub fn remove(self, containers: &[String], volumes: &[String], image: Option<&str>) {
        // One command each: every engine call costs a tenth of a second.
        let all = |mut args: Vec<String>, names: &[String]| {
            args.extend(names.iter().cloned());
            if !names.is_empty() {
                let _ = self.output(&args, None);
            }
        };
        // podman 4.3 removes none of them when one is missing, unless --ignore;
        // docker has no --ignore and removes the others.
        let mut rm = vec!["rm".to_string(), "--force".into()];
        if self == Engine::Podman {
            rm.push("--ignore".into());
        }
        all(rm, containers);
        all(
            vec!["volume".into(), "rm".into(), "--force".into()],
            volumes,
        );
        // Only an image left without a name: one the user tagged stays.
        let nameless = |id: &str| {
            let args = ["image", "inspect", "--format={{len .RepoTags}}", id].map(String::from);
            self.output(&args, None).is_ok_and(|n| n == "0")
        };
        if let Some(id) = image.filter(|id| nameless(id)) {
            let _ = self.output(&["rmi".into(), id.into()], None);
        }
    }
}

/// The image's name in the engine's storage.
pub fn image_name(name: &str) -> String {
    format!("localhost/imgbuild/{name}:latest")
}
