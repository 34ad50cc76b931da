//! The namespace sandbox: between fork and exec, the child enters new user,
//! mount, PID, network, IPC and UTS namespaces, makes the unpacked tree
//! (bound read-only) its `/` with a tmpfs `/tmp`, a tmpfs `/dev` holding only
//! null, zero, random and urandom, and the tools; then it drops every
//! capability (its uid inside is not 0) and every way back.
//!
//! Everything the child does is a plain system call on data prepared in the
//! parent ([`Plan`]): between fork and exec a multi-threaded parent's child
//! may not allocate. A new PID namespace only takes effect for children, so
//! the child forks once more: the grandchild is PID 1 of the new namespace
//! and execs; the child waits for it, exits as it did, and closes every file
//! descriptor first so that `spawn` returns as soon as the grandchild execs.

use super::{Limits, INSIDE_ID};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Where the tools are mounted, inside.
const TOOLS_DIR: &str = "/dev/imgbuild";

/// The devices a process expects (Python opens /dev/null and /dev/urandom).
const DEVICES: [&str; 4] = ["null", "zero", "random", "urandom"];

pub(super) fn tool_path(name: &str) -> PathBuf {
    Path::new(TOOLS_DIR).join(name)
}

/// Where input `i` is seen, inside: a directory in the scratch tmpfs.
pub(super) fn input_path(i: usize) -> PathBuf {
    PathBuf::from(format!("/tmp/input-{i}"))
}

/// What the child needs, as C strings, made before the fork.
pub(super) struct Plan {
    root: CString,
    tmp: CString,
    dev: CString,
    tools_dir: CString,
    /// Host device, mount point under the new `/dev`.
    devices: Vec<(CString, CString)>,
    /// Host tool, mount point under the tools directory.
    tools: Vec<(CString, CString)>,
    /// Host directory, mount point in the scratch tmpfs, and the flags its
    /// read-only remount must keep.
    inputs: Vec<(CString, CString, libc::c_ulong)>,
    /// The flags a remount of the tree must keep (the kernel refuses to
    /// clear nosuid, noexec or the atime flags of the mount it came from).
    root_flags: libc::c_ulong,
    uid_map: CString,
    gid_map: CString,
    tmp_options: CString,
    memory: u64,
}

fn c(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

impl Plan {
    /// Prepares the mount points in the tree (the tree is imgbuild's own
    /// unpacked copy) and everything the child will need.
    pub(super) fn new(
        root: &Path,
        tools: &[(PathBuf, String)],
        limits: Limits,
    ) -> io::Result<Plan> {
        for dir in ["tmp", "dev"] {
            mount_point_dir(&root.join(dir))?;
        }
        let dev = root.join("dev");
        let tools_dir = root.join(TOOLS_DIR.trim_start_matches('/'));
        let devices = DEVICES
            .iter()
            .map(|d| Ok((c(&Path::new("/dev").join(d))?, c(&dev.join(d))?)))
            .collect::<io::Result<_>>()?;
        let tools = tools
            .iter()
            .map(|(host, name)| Ok((c(host)?, c(&tools_dir.join(name))?)))
            .collect::<io::Result<_>>()?;
        // SAFETY: geteuid and getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Ok(Plan {
            root: c(root)?,
            tmp: c(&root.join("tmp"))?,
            dev: c(&dev)?,
            tools_dir: c(&tools_dir)?,
            devices,
            tools,
            inputs: Vec::new(),
            root_flags: mount_flags(root)?,
            uid_map: CString::new(format!("{INSIDE_ID} {uid} 1\n")).expect("digits"),
            gid_map: CString::new(format!("{INSIDE_ID} {gid} 1\n")).expect("digits"),
            tmp_options: CString::new(format!("size={},mode=1777", limits.scratch))
                .expect("digits"),
            memory: limits.memory,
        })
    }
}

impl Plan {
    /// Adds host directories to be bound read-only in the scratch tmpfs.
    pub(super) fn with_inputs(mut self, inputs: &[&Path]) -> io::Result<Plan> {
        let root = Path::new(OsStr::from_bytes(self.root.as_bytes())).to_path_buf();
        for (i, dir) in inputs.iter().enumerate() {
            let inside = input_path(i);
            let at = root.join(inside.strip_prefix("/").unwrap_or(&inside));
            self.inputs.push((c(dir)?, c(&at)?, mount_flags(dir)?));
        }
        Ok(self)
    }
}

/// `dir` as a real directory (not a link that could lead a mount elsewhere).
fn mount_point_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => std::fs::remove_file(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The mount flags of the file system holding `path` that a bind remount must keep.
fn mount_flags(path: &Path) -> io::Result<libc::c_ulong> {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let p = c(path)?;
    // SAFETY: a valid C string and a statvfs buffer.
    if unsafe { libc::statvfs(p.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let pairs = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs
        .iter()
        .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
        .fold(0, |acc, (_, ms)| acc | ms))
}

/// Which step of the setup failed, and how.
#[derive(Clone, Copy, Debug)]
struct Failed {
    step: &'static str,
    errno: i32,
}

type Step = Result<(), Failed>;

fn check(step: &'static str, rc: libc::c_long) -> Step {
    if rc < 0 {
        Err(Failed {
            step,
            errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
        })
    } else {
        Ok(())
    }
}

fn write_file(step: &'static str, path: &CStr, data: &[u8]) -> Step {
    // SAFETY: plain system calls on valid pointers.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(step, fd.into())?;
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        check(step, n as libc::c_long)
    }
}

/// New namespaces for this process (its children get the new PID namespace),
/// mapped to [`INSIDE_ID`].
fn unshare(plan: &Plan) -> Step {
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    // SAFETY: unshare takes flags only.
    check("unshare", unsafe { libc::unshare(flags) }.into())?;
    write_file("uid_map", c"/proc/self/uid_map", plan.uid_map.as_bytes())?;
    write_file("setgroups", c"/proc/self/setgroups", b"deny")?;
    write_file("gid_map", c"/proc/self/gid_map", plan.gid_map.as_bytes())
}

fn mount(
    step: &'static str,
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Step {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: valid C strings or null, as mount(2) allows.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    check(step, rc.into())
}

/// An empty file to mount over (inside the new /dev tmpfs).
fn touch(step: &'static str, path: &CStr) -> Step {
    // SAFETY: open and close on a valid C string.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
            0o644,
        );
        check(step, fd.into())?;
        libc::close(fd);
    }
    Ok(())
}

/// The new root: the tree bound read-only, a tmpfs /tmp, a /dev of four
/// devices and the tools; then it becomes `/` and the host's root is gone.
fn make_root(plan: &Plan) -> Step {
    let private = libc::MS_REC | libc::MS_PRIVATE;
    mount("private", None, c"/", None, private, None)?;
    let bind = libc::MS_BIND | libc::MS_REC;
    mount("bind root", Some(&plan.root), &plan.root, None, bind, None)?;
    let read_only = libc::MS_REMOUNT
        | libc::MS_BIND
        | libc::MS_RDONLY
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | plan.root_flags;
    mount("read-only root", None, &plan.root, None, read_only, None)?;
    let tmpfs = libc::MS_NOSUID | libc::MS_NODEV;
    let tmp_options = Some(plan.tmp_options.as_c_str());
    mount(
        "tmp",
        Some(c"tmpfs"),
        &plan.tmp,
        Some(c"tmpfs"),
        tmpfs,
        tmp_options,
    )?;
    for (host, inside, flags) in &plan.inputs {
        // SAFETY: mkdir on a valid C string, in our own tmpfs.
        check(
            "input",
            unsafe { libc::mkdir(inside.as_ptr(), 0o755) }.into(),
        )?;
        mount("input", Some(host), inside, None, bind, None)?;
        let ro =
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        mount("input", None, inside, None, ro | flags, None)?;
    }
    let dev_options = Some(c"size=64k,mode=0755");
    mount(
        "dev",
        Some(c"tmpfs"),
        &plan.dev,
        Some(c"tmpfs"),
        tmpfs,
        dev_options,
    )?;
    for (host, inside) in &plan.devices {
        touch("device", inside)?;
        mount("device", Some(host), inside, None, libc::MS_BIND, None)?;
    }
    if !plan.tools.is_empty() {
        // SAFETY: mkdir on a valid C string.
        check(
            "tools",
            unsafe { libc::mkdir(plan.tools_dir.as_ptr(), 0o755) }.into(),
        )?;
    }
    for (host, inside) in &plan.tools {
        touch("tool", inside)?;
        mount("tool", Some(host), inside, None, libc::MS_BIND, None)?;
        let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID;
        mount("tool", None, inside, None, ro, None)?;
    }
    let dev_ro = libc::MS_REMOUNT | libc::MS_RDONLY | tmpfs;
    mount("read-only dev", None, &plan.dev, None, dev_ro, dev_options)?;
    pivot(plan)
}

/// `pivot_root(".", ".")` then detaching the old root, as runc does: no
/// directory for the old root is needed in the read-only tree.
fn pivot(plan: &Plan) -> Step {
    // SAFETY: plain system calls on valid C strings.
    unsafe {
        check("chdir", libc::chdir(plan.root.as_ptr()).into())?;
        let dot = c".".as_ptr();
        check("pivot_root", libc::syscall(libc::SYS_pivot_root, dot, dot))?;
        check(
            "detach host root",
            libc::umount2(dot, libc::MNT_DETACH).into(),
        )?;
        check("chdir", libc::chdir(c"/tmp".as_ptr()).into())
    }
}

/// The last steps before exec, in the grandchild.
fn lock_down(plan: &Plan) -> Step {
    // SAFETY: plain system calls.
    unsafe {
        check(
            "no new privileges",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into(),
        )?;
        super::confine::limit_resources(plan.memory).map_err(|errno| Failed {
            step: "rlimit",
            errno,
        })?;
        // Nothing the parent opened without O_CLOEXEC crosses the exec.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    Ok(())
}

/// The child between fork and exec: namespaces, a fork into the new PID
/// namespace, the root, the lock-down. Only the grandchild returns.
fn enter(plan: &Plan) -> io::Result<()> {
    let as_io = |f: Failed| io::Error::from_raw_os_error(f.errno);
    unshare(plan).map_err(as_io)?;
    // SAFETY: fork in a single-threaded child (the one between fork and exec).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        wait_and_exit_as(pid);
    }
    // SAFETY: prctl with constant arguments. PID 1 of the namespace dies
    // with its parent, and every process of the namespace with it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    make_root(plan).map_err(as_io)?;
    lock_down(plan).map_err(as_io)
}

/// The middle process: closes everything (so the parent's `spawn` sees the
/// grandchild's exec, and the pipes close when the grandchild exits), waits,
/// and exits as the grandchild did.
fn wait_and_exit_as(pid: libc::pid_t) -> ! {
    // SAFETY: plain system calls; _exit never returns.
    unsafe {
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// Runs the namespace setup in `cmd`'s child, before exec.
pub(super) fn install(cmd: &mut Command, plan: Plan) {
    let plan = Arc::new(plan);
    // SAFETY: `enter` makes only system calls on data prepared beforehand.
    unsafe {
        cmd.pre_exec(move || enter(&plan));
    }
}

/// Whether this machine lets an unprivileged process set up the sandbox:
/// a forked child goes through every step but the exec and says how far it
/// got. One fork and a few system calls, once per imgbuild process.
pub(super) fn probe(root: &Path) -> Result<(), String> {
    let limits = Limits {
        memory: u64::MAX,
        scratch: 1 << 20,
        time: std::time::Duration::from_secs(1),
    };
    let plan =
        Plan::new(root, &[], limits).map_err(|e| format!("preparing {}: {e}", root.display()))?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: the child makes only system calls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let outcome = unshare(&plan).and_then(|()| make_root(&plan));
        let code = match outcome {
            Ok(()) => 0,
            Err(f) => {
                let step = f.step.as_bytes();
                // SAFETY: write to our pipe, then _exit.
                unsafe {
                    libc::write(fds[1], (&f.errno as *const i32).cast(), 4);
                    libc::write(fds[1], step.as_ptr().cast(), step.len());
                }
                1
            }
        };
        // SAFETY: leaving the forked child without running destructors.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut report = Vec::new();
    {
        use std::io::Read;
        use std::os::fd::FromRawFd;
        // SAFETY: the read end is ours alone.
        let mut read_end = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let _ = read_end.read_to_end(&mut report);
    }
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if report.len() >= 4 {
        let errno = i32::from_ne_bytes(report[..4].try_into().expect("four bytes"));
        let step = String::from_utf8_lossy(&report[4..]);
        return Err(format!(
            "namespaces are not allowed ({step}: {})",
            io::Error::from_raw_os_error(errno)
        ));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!(
            "namespaces are not allowed (the probe ended with status {status})"
        ));
    }
    Ok(())
}
