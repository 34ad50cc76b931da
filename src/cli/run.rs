//! `imgbuild run [-- COMMAND]`: builds the image for this machine and runs it
//! with podman (or docker) as a single server would (the same user,
//! read-only root, limits, init step and mounts as `--format compose` and
//! `--format systemd`, from the same `deploy::server` model), published on
//! 127.0.0.1. Ctrl-C stops and removes the containers and their volumes.
//!
//! `--watch` polls the app layer's files (what `.dockerignore` keeps of the
//! source tree), the spec and the lockfile; on a change it rebuilds (warm:
//! only the app layer is new), and when the image digest changed, restarts
//! the init step and the app. Polling rather than inotify: it needs no
//! watcher per directory, works the same on every file system, and a project
//! tree is small enough to stat a few times a second.

use super::args::{BuildFlags, CommonArgs, RegistryArgs};
use super::engine::{image_name, Engine, EngineError};
use super::prepare::{prepare, registry_client, run_build, Prepared};
use super::progress::event_printer;
use crate::build::Event;
use crate::deploy::{self, server};
use crate::output::BuildResult;
use crate::platform::Platform;
use crate::registry::RegistryClient;
use crate::spec::{Publish, Spec};
use clap::Args;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The spec: imgbuild.toml, or a pyproject.toml with [tool.imgbuild]. Default: ./imgbuild.toml, then ./pyproject.toml.
    #[arg(short = 'f', long = "file")]
    pub spec: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildFlags,
    /// The host port to publish the app's port on: PORT (on 127.0.0.1) or ADDRESS:PORT.
    /// Default: 127.0.0.1 and the app's `port`.
    #[arg(short, long, value_name = "[ADDRESS:]PORT")]
    pub publish: Option<String>,
    /// An environment variable for the init step and the app: NAME=VALUE, or NAME to pass
    /// this shell's value (repeatable).
    #[arg(short, long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// A file of NAME=VALUE lines, as `docker run --env-file` reads it (repeatable).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Rebuild and restart when a source file, the spec or the lockfile changes.
    #[arg(long)]
    pub watch: bool,
    /// auto (podman when it answers, else docker), podman or docker.
    #[arg(long, default_value = "auto", value_name = "ENGINE")]
    pub engine: String,
    /// A command to run instead of the image's, as `docker run IMAGE COMMAND` does.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("--publish {given:?}: expected PORT or ADDRESS:PORT, such as 8080 or 127.0.0.1:8080")]
    Publish { given: String },
    #[error("--env-file {}: no such file", .0.display())]
    EnvFile(PathBuf),
    #[error("the app exited ({status})")]
    AppExited { status: String },
}

/// Set by SIGINT and SIGTERM; the loop below stops the containers and returns.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn catch_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// What one run session holds: the engine, the build context and the server.
struct Session {
    engine: Engine,
    ctx: Prepared,
    common: CommonArgs,
    client: Arc<RegistryClient>,
    server: server::Server,
    /// NAME of the image in the engine, `localhost/imgbuild/NAME:latest`.
    local_name: String,
    /// `--publish`, kept for when a changed spec is planned again.
    publish: Option<Publish>,
    env: Vec<String>,
    command: Vec<String>,
    verbose: bool,
}

pub(super) fn cmd_run(args: RunArgs, verbose: bool) -> anyhow::Result<()> {
    let engine = Engine::find(&args.engine)?;
    let publish = match &args.publish {
        None => None,
        Some(p) => Some(parse_publish(p).ok_or_else(|| RunError::Publish { given: p.clone() })?),
    };
    let mut env = Vec::new();
    for e in &args.env {
        env.push(format!("--env={e}"));
    }
    for f in &args.env_files {
        if !f.is_file() {
            return Err(RunError::EnvFile(f.clone()).into());
        }
        env.push(format!("--env-file={}", f.display()));
    }
    let common = CommonArgs {
        spec: args.spec.clone(),
        build: args.build.clone(),
        digest_file: None,
        json: false,
    };
    let mut ctx = prepare(&common, verbose)?;
    if ctx.platforms.is_empty() {
        ctx.platforms = vec![host_platform()];
    }
    let client = registry_client(&common, &RegistryArgs::default(), None)?;
    let server = plan_server(&ctx.spec, publish.clone())?;
    let local_name = deploy::kube_name(&ctx.spec, &deploy::project(&ctx.spec));
    let mut session = Session {
        engine,
        ctx,
        common,
        client,
        server,
        local_name,
        publish,
        env,
        command: args.command.clone(),
        verbose,
    };
    session.run(args.watch)
}

/// The platform of this machine, which the engine runs without emulation.
fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    Platform::new("linux", arch, None)
}

/// `PORT` (on 127.0.0.1) or `ADDRESS:PORT`.
fn parse_publish(text: &str) -> Option<Publish> {
    let loopback = || Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let (address, port) = match text.rsplit_once(':') {
        None => (loopback(), text),
        Some((a, p)) => {
            let a = a
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(a);
            (Some(a.parse().ok()?), p)
        }
    };
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    Some(Publish { address, port })
}

/// The production server, run locally: published on 127.0.0.1 (the app's
/// port) unless `--publish` says otherwise, whatever `[deploy] publish` holds.
/// `tls` files that are not on this machine (paths on the server) leave the
/// local run on plain HTTP, with a note.
fn plan_server(spec: &Spec, publish: Option<Publish>) -> anyhow::Result<server::Server> {
    let name = deploy::kube_name(spec, &deploy::project(spec));
    let cwd = std::env::current_dir()?;
    let mut local = spec.clone();
    if let Some(tls) = &spec.deploy.tls {
        if !tls.cert.is_file() || !tls.key.is_file() {
            eprintln!(
                "note: {} or {} is not on this machine; serving plain HTTP here",
                tls.cert.display(),
                tls.key.display()
            );
            local.deploy.tls = None;
        }
    }
    // The user's HOME and the `writable` directories, as the outputs mount them.
    let state_dirs = local.state_dirs();
    let mut server = server::plan(&server::Input {
        spec: &local,
        name: format!("{name}-run"),
        image: image_name(&name),
        spec_shown: crate::text::shown(&spec.file, &cwd),
        writable: &state_dirs,
    })?;
    server.publish = publish.unwrap_or(Publish {
        address: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        port: spec.port,
    });
    Ok(server)
}

/// How often --watch looks at the files.
const POLL: Duration = Duration::from_millis(200);

impl Session {
    fn run(&mut self, watch: bool) -> anyhow::Result<()> {
        let printer = event_printer(self.verbose);
        let result = run_build(&self.ctx, &self.common, self.client.clone(), &printer, &[])?;
        let mut image = self.load(&result)?;
        let mut digest = result.digest();
        catch_signals();
        // Ctrl-C during the init step: no app to start.
        let mut app = match self.init(watch)? && !STOP.load(Ordering::SeqCst) {
            true => Some(self.start_app()?),
            false => None,
        };
        let mut seen = watch.then(|| snapshot(&self.ctx.spec));
        // Old apps' `run --rm` clients, still removing their containers.
        let (mut retiring, mut restarts): (Vec<Child>, usize) = (Vec::new(), 0);
        let mut replaced: Vec<String> = Vec::new();
        let outcome = loop {
            std::thread::sleep(POLL);
            retiring.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            if STOP.load(Ordering::SeqCst) {
                break Ok(());
            }
            if let Some(status) = app.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                app = None;
                if !watch {
                    // A command given after `--` may well end, and end well.
                    break match status.success() {
                        true => Ok(()),
                        false => Err(RunError::AppExited {
                            status: status.to_string(),
                        }
                        .into()),
                    };
                }
                eprintln!("the app exited ({status}); waiting for a change");
            }
            let Some(before) = &seen else { continue };
            let now = snapshot(&self.ctx.spec);
            if &now == before {
                continue;
            }
            seen = Some(now);
            match self.rebuild(&digest) {
                Ok(None) => {}
                Ok(Some((result, new_image))) => {
                    digest = result.digest();
                    eprintln!("restarting with {digest}");
                    let old;
                    (app, old) = self.restart(app.take(), restarts);
                    retiring.extend(old);
                    restarts += 1;
                    // Removed at the end: now it would compete with the new app's
                    // start for the CPU.
                    replaced.push(std::mem::replace(&mut image, new_image));
                }
                Err(e) => eprintln!("error: {}", crate::text::error_chain(e.as_ref())),
            }
        };
        self.stop(app);
        for mut c in retiring {
            let _ = c.wait();
        }
        self.cleanup(&replaced);
        outcome
    }

    fn load(&self, result: &BuildResult) -> Result<String, EngineError> {
        self.engine
            .load(result, &self.ctx.store, self.ctx.epoch, &self.local_name)
    }

    /// The init step. Under --watch a failed one is printed and gives
    /// `false`: the next change may fix it.
    fn init(&self, watch: bool) -> anyhow::Result<bool> {
        let init = format!("{}-init", self.server.name);
        match self.engine.run_init(&self.server, &init, &self.env) {
            Ok(()) => Ok(true),
            Err(e) if watch => {
                let e = crate::text::error_chain(&e);
                eprintln!("error: the init step failed: {e}");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn start_app(&self) -> anyhow::Result<Child> {
        let child = self
            .engine
            .start_app(&self.server, &self.env, &self.command)?;
        eprintln!(
            "{}: {}://{}/ (Ctrl-C stops it)",
            self.server.name,
            if self.server.https { "https" } else { "http" },
            host_port(&self.server.publish),
        );
        Ok(child)
    }

    /// The new image's init step runs while the old app stops, as a new
    /// pod's runs while the old one drains; then the new app starts. The old
    /// container is renamed once stopped, so the new one need not wait for
    /// its removal; its client is returned, still removing it. `n` makes the
    /// old name unique.
    fn restart(&self, old: Option<Child>, n: usize) -> (Option<Child>, Option<Child>) {
        let started = std::time::Instant::now();
        let (old, initialised) = std::thread::scope(|s| {
            let stopping = s.spawn(|| {
                let old = old.inspect(|_| {
                    self.engine.stop(&self.server.name, 10);
                    let retired = format!("{}-retired-{n}", self.server.name);
                    self.engine.rename(&self.server.name, &retired);
                });
                self.timing("old app stopped", started);
                old
            });
            let ok = self.init(true);
            self.timing("init step run", started);
            (stopping.join().ok().flatten(), ok)
        });
        match initialised.and_then(|ok| ok.then(|| self.start_app()).transpose()) {
            Ok(app) => (app, old),
            Err(e) => {
                eprintln!("error: {}", crate::text::error_chain(e.as_ref()));
                (None, old)
            }
        }
    }

    /// A new image when the build's digest differs from `digest`.
    fn rebuild(
        &mut self,
        digest: &crate::digest::Digest,
    ) -> anyhow::Result<Option<(BuildResult, String)>> {
        self.ctx.spec = crate::spec::load(self.common.spec.as_deref(), &std::env::current_dir()?)?;
        self.server = plan_server(&self.ctx.spec, self.publish.clone())?;
        let verbose = self.verbose;
        let full = event_printer(true);
        // Quiet unless -v: a rebuild's layer lines would bury the app's logs.
        let printer = move |e: Event| match e {
            Event::Warning(w) => eprintln!("warning: {w}"),
            other if verbose => full(other),
            _ => {}
        };
        let started = std::time::Instant::now();
        let result = run_build(&self.ctx, &self.common, self.client.clone(), &printer, &[])?;
        self.timing("rebuilt", started);
        if &result.digest() == digest {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let image = self.load(&result)?;
        self.timing("handed to the engine", started);
        Ok(Some((result, image)))
    }

    /// With -v, how long a step of the watch loop took (what `scripts/bench.sh
    /// watch` adds up).
    fn timing(&self, what: &str, since: std::time::Instant) {
        if self.verbose {
            eprintln!("{what} in {} ms", since.elapsed().as_millis());
        }
    }

    /// Stops the app (SIGTERM: uvicorn finishes its requests) and waits for it.
    fn stop(&self, app: Option<Child>) {
        if let Some(mut child) = app {
            self.engine.stop(&self.server.name, 10);
            let _ = child.wait();
        }
    }

    /// Removes what is left: the app and init containers, the volumes (the
    /// retired apps' clients removed theirs), the `replaced` images.
    fn cleanup(&self, replaced: &[String]) {
        let name = &self.server.name;
        let volumes: Vec<String> = self
            .server
            .mounts
            .iter()
            .filter_map(|m| match m {
                server::Mount::Volume { name: v, .. } => Some(format!("{name}-{v}")),
                _ => None,
            })
            .collect();
        self.engine
            .remove(&[name.clone(), format!("{name}-init")], &volumes, replaced);
        eprintln!("stopped and removed {name}");
    }
}

/// `127.0.0.1:8000`, `[::1]:8000`, or `localhost:8000` for every address.
fn host_port(p: &Publish) -> String {
    match p.address {
        None => format!("localhost:{}", p.port),
        Some(std::net::IpAddr::V6(a)) => format!("[{a}]:{}", p.port),
        Some(a) => format!("{a}:{}", p.port),
    }
}

/// What the build reads from the project, by path: size and modification
/// time of each file of the app layer, the spec and the lockfile.
type Snapshot = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn snapshot(spec: &Spec) -> Snapshot {
    let mut files: Vec<PathBuf> = vec![spec.file.clone()];
    files.extend(spec.lockfile.clone());
    if let Ok(tree) = crate::app::plan_app_layer(&spec.source, &spec.workdir, &spec.app_excludes())
    {
        for (_, entry) in tree.plan.entries() {
            if let crate::layer::EntryKind::File {
                content: crate::layer::Content::HostFile(p),
                ..
            } = &entry.kind
            {
                files.push(p.clone());
            }
        }
    }
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let mtime = meta.and_then(|m| m.modified().ok());
            (p, size, mtime)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_takes_a_port_or_an_address_and_port() {
        let lo = Some("127.0.0.1".parse().unwrap());
        assert_eq!(
            parse_publish("8080"),
            Some(Publish {
                address: lo,
                port: 8080
            })
        );
        assert_eq!(
            parse_publish("0.0.0.0:80"),
            Some(Publish {
                address: Some("0.0.0.0".parse().unwrap()),
                port: 80
            })
        );
        assert_eq!(parse_publish("[::1]:80").unwrap().port, 80);
        assert_eq!(parse_publish("localhost:80"), None);
        assert_eq!(parse_publish("0"), None);
    }

    #[test]
    fn a_snapshot_changes_with_a_source_file_and_not_with_an_ignored_one() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(".dockerignore"), "notes/\n").unwrap();
        std::fs::create_dir(tmp.path().join("notes")).unwrap();
        std::fs::write(tmp.path().join("main.py"), "app = 1\n").unwrap();
        let spec = server::tests::spec_in(tmp.path(), "");
        let first = snapshot(&spec);
        std::fs::write(tmp.path().join("notes/todo.txt"), "x").unwrap();
        assert_eq!(snapshot(&spec), first, "ignored files do not count");
        std::fs::write(tmp.path().join("main.py"), "app = 22\n").unwrap();
        assert_ne!(snapshot(&spec), first);
    }
}
