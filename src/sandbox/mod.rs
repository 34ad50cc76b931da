//! Running code from a base image on this machine, sandboxed: the base's own
//! interpreter compiles bytecode (and will build sdists), and a base pulled
//! by tag is untrusted, so its code must reach nothing of the host.
//!
//! A sandboxed process sees the unpacked base tree, read-only, plus a private
//! scratch directory; no other host path, no network, no new privileges, a
//! clean environment, a memory cap and a deadline. Two mechanisms, the first
//! that this machine allows (probed once per process):
//! - **namespaces** ([`namespaces`]): new user, mount, PID, network, IPC and
//!   UTS namespaces with the tree as `/`, as BuildKit and Nix run builds;
//! - **Landlock + seccomp** ([`confine`]), where unprivileged namespaces are
//!   not allowed (some Kubernetes pods, Ubuntu's AppArmor restriction): the
//!   file system is cut down to the tree and the scratch directory, and
//!   sockets and the kernel interfaces a sandbox escape needs are refused.
//!
//! Where neither is available the build fails with one line naming what is
//! missing, unless the project set `sandbox = false` (never silently).

mod confine;
mod namespaces;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot run the base's Python in a sandbox here: {namespaces}, and {landlock}; allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0), or set `bytecode = false`, or `sandbox = false` to run the base's code unsandboxed (only for a base you trust)")]
    Unavailable {
        namespaces: String,
        landlock: String,
    },
    #[error("sandbox for {root}: preparing {what}")]
    Prepare {
        root: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox: {tool} is not a static executable, so it cannot run inside the sandbox; install a statically linked one (Debian: apt-get install qemu-user-static)")]
    DynamicTool { tool: String },
}

/// Whether the base's code may run at all without a sandbox (`sandbox`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// The default: a sandbox, or an error.
    #[default]
    Required,
    /// `sandbox = false`: the user trusts the base.
    Off,
}

/// How a sandboxed process is confined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Namespaces,
    Landlock {
        abi: i32,
    },
    /// `sandbox = false`.
    None,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mechanism::Namespaces => {
                f.write_str("user, mount, PID, network, IPC and UTS namespaces, the base as /")
            }
            Mechanism::Landlock { abi } => write!(f, "Landlock (ABI {abi}) and seccomp"),
            Mechanism::None => f.write_str("none (sandbox = false)"),
        }
    }
}

/// What a sandboxed process may use.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Address space (RLIMIT_AS) in bytes.
    pub memory: u64,
    /// Size of the scratch directory (a tmpfs, with namespaces).
    pub scratch: u64,
    /// Wall-clock time, enforced by [`Watchdog`].
    pub time: Duration,
}

/// The uid and gid a sandboxed process has inside its user namespace: not 0,
/// so the capabilities of the namespace's creator are gone after exec.
const INSIDE_ID: u32 = 1000;

/// The sandbox for one unpacked base tree.
pub struct Sandbox {
    mechanism: Mechanism,
    root: PathBuf,
    /// Static host executables (qemu-user) the sandboxed process may run, and
    /// where it sees them.
    tools: Vec<(PathBuf, String)>,
    limits: Limits,
}

impl Sandbox {
    /// A sandbox over `root` (the unpacked base), with `tools` (static host
    /// executables) visible inside it; picks the mechanism on first use.
    pub fn new(
        root: &Path,
        tools: &[PathBuf],
        limits: Limits,
        policy: Policy,
    ) -> Result<Sandbox, SandboxError> {
        let mechanism = match policy {
            Policy::Off => Mechanism::None,
            Policy::Required => available(root)?,
        };
        let mut named = Vec::new();
        for tool in tools {
            if mechanism == Mechanism::Namespaces && is_dynamic(tool) {
                return Err(SandboxError::DynamicTool {
                    tool: tool.display().to_string(),
                });
            }
            let name = tool
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "tool".into());
            named.push((tool.clone(), name));
        }
        Ok(Sandbox {
            mechanism,
            root: root.to_path_buf(),
            tools: named,
            limits,
        })
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Where the sandboxed process finds `path`, absolute in the image.
    pub fn image_path(&self, path: &str) -> PathBuf {
        match self.mechanism {
            Mechanism::Namespaces => PathBuf::from("/").join(path.trim_start_matches('/')),
            _ => self.root.join(path.trim_start_matches('/')),
        }
    }

    /// Where the sandboxed process finds the host tool `tool` (given to [`Sandbox::new`]).
    pub fn tool_path(&self, tool: &Path) -> PathBuf {
        match self.mechanism {
            Mechanism::Namespaces => self
                .tools
                .iter()
                .find(|(host, _)| host == tool)
                .map(|(_, name)| namespaces::tool_path(name))
                .unwrap_or_else(|| tool.to_path_buf()),
            _ => tool.to_path_buf(),
        }
    }

    /// `program args…` ready to spawn in the sandbox, with a clean
    /// environment plus `env`, in the scratch directory, and host
    /// directories it may read (an sdist and its build requirements); also
    /// returns where the process sees each input. The scratch directory
    /// lives as long as the returned [`Scratch`].
    pub fn command(
        &self,
        program: &Path,
        env: &[(&str, &str)],
        inputs: &[&Path],
    ) -> Result<(Command, Scratch, Vec<PathBuf>), SandboxError> {
        let mut cmd = Command::new(program);
        cmd.env_clear();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let prepare = |what: &str| {
            let root = self.root.display().to_string();
            let what = what.to_owned();
            move |source| SandboxError::Prepare { root, what, source }
        };
        let scratch = match self.mechanism {
            Mechanism::Namespaces => {
                let plan = namespaces::Plan::new(&self.root, &self.tools, self.limits)
                    .and_then(|p| p.with_inputs(inputs))
                    .map_err(prepare("its mount points"))?;
                cmd.env("TMPDIR", "/tmp").env("HOME", "/tmp");
                namespaces::install(&mut cmd, plan);
                let seen = (0..inputs.len()).map(namespaces::input_path).collect();
                return Ok((cmd, Scratch(None), seen));
            }
            Mechanism::Landlock { .. } | Mechanism::None => {
                let dir = tempfile::Builder::new()
                    .prefix(".scratch-")
                    .tempdir_in(self.root.parent().unwrap_or(&self.root))
                    .map_err(prepare("a scratch directory"))?;
                let dir_os: OsString = dir.path().into();
                cmd.current_dir(dir.path())
                    .env("TMPDIR", &dir_os)
                    .env("HOME", &dir_os);
                if self.mechanism != Mechanism::None {
                    let mut readable: Vec<&Path> =
                        self.tools.iter().map(|(h, _)| h.as_path()).collect();
                    readable.extend(inputs);
                    confine::install(&mut cmd, &self.root, dir.path(), &readable, self.limits)
                        .map_err(prepare("its Landlock rules"))?;
                }
                Scratch(Some(dir))
            }
        };
        Ok((
            cmd,
            scratch,
            inputs.iter().map(|p| p.to_path_buf()).collect(),
        ))
    }
}

/// The host scratch directory of one sandboxed process (none with
/// namespaces, whose scratch is a tmpfs): removed when dropped.
pub struct Scratch(#[allow(dead_code)] Option<tempfile::TempDir>);

/// The mechanism this machine allows, probed once per process.
fn available(root: &Path) -> Result<Mechanism, SandboxError> {
    static FOUND: OnceLock<Result<Mechanism, (String, String)>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let _span = crate::trace::span(|| "sandbox: probe".into());
            let namespaces = match namespaces::probe(root) {
                Ok(()) => return Ok(Mechanism::Namespaces),
                Err(why) => why,
            };
            match confine::probe() {
                Ok(abi) => Ok(Mechanism::Landlock { abi }),
                Err(landlock) => Err((namespaces, landlock)),
            }
        })
        .clone()
        .map_err(|(namespaces, landlock)| SandboxError::Unavailable {
            namespaces,
            landlock,
        })
}

/// Whether an ELF executable needs a dynamic loader (and so host libraries).
fn is_dynamic(path: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(64 << 10).read_to_end(&mut head));
    read.is_ok() && head.starts_with(b"\x7fELF") && contains_interp(&head)
}

/// Whether an ELF header lists a PT_INTERP program header.
fn contains_interp(elf: &[u8]) -> bool {
    let wide = elf.get(4) == Some(&2);
    let little = elf.get(5) == Some(&1);
    let num = |at: usize, len: usize| -> Option<u64> {
        let b = elf.get(at..at + len)?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if little { b[i] } else { b[len - 1 - i] };
            v |= u64::from(byte) << (8 * i);
        }
        Some(v)
    };
    let (phoff, phentsize, phnum) = if wide {
        (num(0x20, 8), num(0x36, 2), num(0x38, 2))
    } else {
        (num(0x1c, 4), num(0x2a, 2), num(0x2c, 2))
    };
    let (Some(phoff), Some(size), Some(count)) = (phoff, phentsize, phnum) else {
        return false;
    };
    (0..count).any(|i| {
        usize::try_from(phoff + i * size)
            .ok()
            .and_then(|at| num(at, 4))
            == Some(3)
    })
}

/// Kills a sandboxed process that outlives its deadline. The pid is only
/// signalled while the process has not been waited for: [`Watchdog::done`]
/// must be called right after `wait`.
pub struct Watchdog {
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl Watchdog {
    pub fn start(pid: u32, limit: Duration) -> Watchdog {
        let (done, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                // SAFETY: a plain kill(2); the process is not reaped until
                // `done`, so the pid is still its own.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                return true;
            }
            false
        });
        Watchdog {
            done: Some(done),
            thread: Some(thread),
        }
    }

    /// Stops the watchdog; true when it had to kill the process.
    pub fn done(mut self) -> bool {
        self.stop()
    }

    fn stop(&mut self) -> bool {
        drop(self.done.take());
        self.thread
            .take()
            .is_some_and(|t| t.join().unwrap_or(false))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
