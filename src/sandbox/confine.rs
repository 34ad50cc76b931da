//! The fallback sandbox, where namespaces are not allowed: Landlock limits
//! the file system to the tree (read and execute), the tools (read and
//! execute), the scratch directory (everything) and /dev/null; seccomp
//! refuses sockets and the kernel interfaces an escape would use (mounts,
//! ptrace, other processes' memory, BPF, io_uring, keyrings, modules, new
//! namespaces). Both are built in the parent and applied between fork and
//! exec, where nothing may allocate.

use super::Limits;
use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope, ABI,
};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// The Landlock ABI the rules are written for: the newest this crate knows
/// that changes nothing we rely on; older kernels get what they support
/// (best effort), newer ones are not needed.
const RULES_ABI: ABI = ABI::V6;

/// System calls a compile or a build never needs and a sandbox escape does.
const DENIED: &[libc::c_long] = &[
    libc::SYS_socket,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_syslog,
    libc::SYS_acct,
];

/// The seccomp program, for the host's architecture (a qemu-user process
/// makes host system calls).
fn seccomp_program() -> io::Result<BpfProgram> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| io::Error::other(format!("seccomp: {e}")))
}

/// The Landlock ABI this kernel has, if any.
fn landlock_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    // only returns the ABI version.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    i32::try_from(abi).unwrap_or(0)
}

/// Whether Landlock and seccomp are both usable here; the Landlock ABI if so.
pub(super) fn probe() -> Result<i32, String> {
    let abi = landlock_abi();
    if abi < 1 {
        return Err(
            "Landlock is not available (a kernel before 5.13, or Landlock not enabled at boot)"
                .into(),
        );
    }
    seccomp_program().map_err(|e| format!("seccomp is not available ({e})"))?;
    Ok(abi)
}

/// The Landlock rules for one run: the tree, the tools and the inputs
/// read-only, the scratch directory writable, no TCP, no abstract sockets or
/// signals out.
fn ruleset(root: &Path, scratch: &Path, readable: &[&Path]) -> Result<RulesetCreated, String> {
    let err = |e: landlock::RulesetError| e.to_string();
    let path_fd = |p: &Path| PathFd::new(p).map_err(|e| format!("{}: {e}", p.display()));
    let read = AccessFs::from_read(RULES_ABI);
    let file_read = read & AccessFs::from_file(RULES_ABI);
    let mut created = Ruleset::default()
        // The file system rules are the sandbox: without them, refuse.
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .map_err(err)?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(RULES_ABI))
        .map_err(err)?
        .handle_access(AccessNet::from_all(RULES_ABI))
        .map_err(err)?
        .scope(Scope::from_all(RULES_ABI))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rule(PathBeneath::new(path_fd(root)?, read))
        .map_err(err)?
        .add_rule(PathBeneath::new(
            path_fd(scratch)?,
            AccessFs::from_all(RULES_ABI),
        ))
        .map_err(err)?
        .add_rule(PathBeneath::new(
            path_fd(Path::new("/dev/null"))?,
            AccessFs::ReadFile | AccessFs::WriteFile,
        ))
        .map_err(err)?;
    for path in readable {
        let access = if path.is_dir() { read } else { file_read };
        created = created
            .add_rule(PathBeneath::new(path_fd(path)?, access))
            .map_err(err)?;
    }
    Ok(created)
}

/// Sets the resource limits of a sandboxed process; the errno on failure.
/// Called between fork and exec.
pub(super) fn limit_resources(memory: u64) -> Result<(), i32> {
    let set = |resource, value: u64| {
        let limit = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(())
    };
    if memory != u64::MAX {
        set(libc::RLIMIT_AS, memory)?;
    }
    set(libc::RLIMIT_CORE, 0)
}

/// Applies the rules, the limits and the seccomp program in `cmd`'s child.
pub(super) fn install(
    cmd: &mut Command,
    root: &Path,
    scratch: &Path,
    readable: &[&Path],
    limits: Limits,
) -> io::Result<()> {
    let created = ruleset(root, scratch, readable).map_err(io::Error::other)?;
    let program = Arc::new(seccomp_program()?);
    // The child takes the ruleset out once; a Mutex makes the closure Sync.
    let created = Mutex::new(Some(created));
    let memory = limits.memory;
    // SAFETY: only system calls on data made before the fork: the mutex is
    // uncontended in the single-threaded child.
    unsafe {
        cmd.pre_exec(move || {
            limit_resources(memory).map_err(io::Error::from_raw_os_error)?;
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            let ruleset = created
                .lock()
                .ok()
                .and_then(|mut r| r.take())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            ruleset
                .restrict_self()
                .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
            seccompiler::apply_filter(&program)
                .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))
        });
    }
    Ok(())
}
