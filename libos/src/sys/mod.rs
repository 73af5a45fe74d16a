//! Every system call the launcher needs, and the only module of the crate with `unsafe`.
//!
//! Each wrapper converts a C result into `io::Result`, retries on `EINTR` where the call can
//! be interrupted, and carries a SAFETY comment for its `unsafe` block.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Converts a path to a C string (paths with interior NUL cannot exist on Linux).
pub(crate) fn cpath(path: &Path) -> io::Result<CString> {
    cstring(path.as_os_str())
}

/// Converts an OS string to a C string.
pub(crate) fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The effective user id.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective group id.
pub(crate) fn getegid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// `unshare(CLONE_NEWNS)`, plus `CLONE_NEWUSER` when `user` is set. Must be called while the
/// process has a single thread (the kernel refuses CLONE_NEWUSER otherwise, and CLONE_NEWNS
/// would only move the calling thread).
pub(crate) fn unshare_mount_namespace(user: bool) -> io::Result<()> {
    let flags = libc::CLONE_NEWNS | if user { libc::CLONE_NEWUSER } else { 0 };
    // SAFETY: unshare takes only flags and changes namespaces of this (single-threaded) process.
    check(unsafe { libc::unshare(flags) })
}

fn mount_raw(
    source: Option<&CStr>,
    target: &Path,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let target = cpath(target)?;
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: all pointers are NUL-terminated strings that outlive the call, or NULL where
    // mount(2) accepts NULL (source/fstype/data for remounts and propagation changes).
    check(unsafe { libc::mount(ptr(source), target.as_ptr(), ptr(fstype), flags, ptr(data).cast()) })
}

/// Makes every mount recursively private so nothing propagates to or from the host.
pub(crate) fn make_private_recursive(target: &Path) -> io::Result<()> {
    mount_raw(None, target, None, libc::MS_REC | libc::MS_PRIVATE, None)
}

/// Mounts a fresh tmpfs at `target` with the given option string (e.g. `mode=0755`).
pub(crate) fn mount_tmpfs(target: &Path, options: &str) -> io::Result<()> {
    let data = CString::new(options).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    mount_raw(Some(c"tmpfs"), target, Some(c"tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some(&data))
}

/// Bind-mounts `source` at `target` (recursively with `recursive`, so submounts come along).
pub(crate) fn bind(source: &Path, target: &Path, recursive: bool) -> io::Result<()> {
    let source = cpath(source)?;
    let flags = libc::MS_BIND | if recursive { libc::MS_REC } else { 0 };
    mount_raw(Some(&source), target, None, flags, None)
}

/// Makes the bind mount at `target` read-only, keeping the flags the kernel may have locked
/// (nosuid, nodev, noexec, atime flags) so that it also works inside a user namespace.
pub(crate) fn remount_bind_readonly(target: &Path) -> io::Result<()> {
    let c = cpath(target)?;
    // SAFETY: statvfs is plain-old-data; zeroed is a valid initial value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer for the call.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    let keep = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    for (st_flag, ms_flag) in keep {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mount_raw(None, target, None, flags, None)
}

/// Lazily detaches the mount at `target` and everything below it.
pub(crate) fn umount_detach(target: &Path) -> io::Result<()> {
    let c = cpath(target)?;
    // SAFETY: `c` is a valid C string; umount2 has no memory-safety preconditions.
    check(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) })
}

/// Whether `path` lies on a `proc` file system.
pub(crate) fn is_proc(path: &Path) -> io::Result<bool> {
    let c = cpath(path)?;
    // SAFETY: statfs is plain-old-data; zeroed is a valid initial value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer for the call.
    check(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    Ok(st.f_type == libc::PROC_SUPER_MAGIC)
}

/// Marks the process not dumpable: no core dumps of the launcher (it may hold keys) and
/// `/proc/PID/mem` of the launcher is closed to same-uid processes.
pub(crate) fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and touches no memory.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
}

/// Everything the child needs, built before `fork` so the child allocates nothing.
pub(crate) struct ExecPlan {
    /// Directory to chroot into (host path of the view's root).
    pub root: CString,
    /// Working directory inside the view.
    pub start_dir: CString,
    /// The program, as a path inside the view.
    pub program: CString,
    /// argv strings.
    pub argv: Vec<CString>,
    /// `NAME=VALUE` strings.
    pub envp: Vec<CString>,
    /// A Landlock ruleset the child enforces on itself right before `execve`
    /// (`sgx.file_check_policy = "strict"`), or -1. Built by the parent: the child may only
    /// make async-signal-safe calls.
    pub landlock: libc::c_int,
}

/// Which step of the child failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildStage {
    /// prctl(PR_SET_PDEATHSIG).
    DeathSignal,
    /// chroot into the view.
    Chroot,
    /// chdir to the start directory.
    Chdir,
    /// prctl(PR_SET_NO_NEW_PRIVS) or landlock_restrict_self.
    Landlock,
    /// execve of the entrypoint.
    Exec,
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

/// A started child: either running (`Ok`) or failed before its program started.
pub(crate) enum Spawned {
    /// The program is running with this pid.
    Running(libc::pid_t),
    /// The child could not start the program: the stage and the errno.
    Failed(ChildStage, io::Error),
}

/// Forks; the child sets `PR_SET_PDEATHSIG(SIGKILL)`, chroots into the view, changes to
/// the start directory, enforces the Landlock ruleset if there is one, and executes the
/// program. A failure in the child is reported through
/// a close-on-exec pipe, so the parent can tell "could not start" from "the program exited".
pub(crate) fn spawn(plan: &ExecPlan) -> io::Result<Spawned> {
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let [read_fd, write_fd] = fds;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork is called from a process whose other threads (if any, e.g. FUSE servers)
    // do not hold locks the child needs: the child only makes raw system calls on memory
    // prepared before the fork (no allocation, no locking) and then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        let err = io::Error::last_os_error();
        // SAFETY: closing the two pipe fds we own.
        unsafe {
            libc::close(read_fd);
            libc::close(write_fd);
        }
        return Err(err);
    }
    if pid == 0 {
        // Child. SAFETY (whole block): only async-signal-safe calls on pointers into `plan`,
        // `argv` and `envp`, which stay valid in the child's copy of the address space.
        unsafe {
            libc::close(read_fd);
            let fail = |stage: u32| -> ! {
                let errno = *libc::__errno_location();
                let report = [stage.to_ne_bytes(), (errno as u32).to_ne_bytes()];
                libc::write(write_fd, report.as_ptr().cast(), 8);
                libc::_exit(127)
            };
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                fail(0);
            }
            // The launcher may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != parent {
                libc::_exit(127);
            }
            if libc::chroot(plan.root.as_ptr()) == -1 {
                fail(1);
            }
            if libc::chdir(plan.start_dir.as_ptr()) == -1 {
                fail(2);
            }
            if plan.landlock >= 0 {
                // Landlock requires no_new_privs (or CAP_SYS_ADMIN); both calls are plain
                // system calls on integers, safe after fork.
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 {
                    fail(4);
                }
                if libc::syscall(libc::SYS_landlock_restrict_self, plan.landlock, 0u32) == -1 {
                    fail(4);
                }
                libc::close(plan.landlock);
            }
            libc::execve(plan.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            fail(3);
        }
    }
    // SAFETY: closing our copy of the write end, which we own.
    unsafe { libc::close(write_fd) };
    let mut report = [0u8; 8];
    let mut got = 0usize;
    while got < report.len() {
        // SAFETY: reading into the unfilled tail of `report`, within bounds.
        let n = unsafe { libc::read(read_fd, report[got..].as_mut_ptr().cast(), report.len() - got) };
        match n {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            n if n <= 0 => break,
            n => got += n as usize,
        }
    }
    // SAFETY: closing the read end, which we own.
    unsafe { libc::close(read_fd) };
    if got < report.len() {
        // EOF: the pipe was closed by a successful execve.
        return Ok(Spawned::Running(pid));
    }
    let stage = u32::from_ne_bytes(report[..4].try_into().unwrap_or_default());
    let errno = u32::from_ne_bytes(report[4..].try_into().unwrap_or_default());
    // Reap the failed child so it leaves no zombie.
    let _ = wait(pid);
    let stage = match stage {
        0 => ChildStage::DeathSignal,
        1 => ChildStage::Chroot,
        2 => ChildStage::Chdir,
        4 => ChildStage::Landlock,
        _ => ChildStage::Exec,
    };
    Ok(Spawned::Failed(stage, io::Error::from_raw_os_error(errno as i32)))
}

/// Waits for `pid` to end (retrying on EINTR).
pub(crate) fn wait(pid: libc::pid_t) -> io::Result<WaitOutcome> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if libc::WIFEXITED(status) {
            return Ok(WaitOutcome::Exited(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(WaitOutcome::Signaled(libc::WTERMSIG(status)));
        }
    }
}

/// The program's pid, for the signal forwarder (0 when no program runs).
static PROGRAM_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = PROGRAM_PID.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes plain integers.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Dispositions saved by [`supervise_signals`].
pub(crate) struct SavedSignals([(libc::c_int, libc::sigaction); 4]);

/// While the program runs: SIGINT and SIGQUIT are ignored by the launcher (the terminal
/// delivers them to the program too, as with `system(3)`), and SIGTERM and SIGHUP are
/// forwarded to the program, so that the launcher outlives it and can flush and unmount.
pub(crate) fn supervise_signals(program: libc::pid_t) -> SavedSignals {
    PROGRAM_PID.store(program, std::sync::atomic::Ordering::Relaxed);
    let install = |sig: libc::c_int, handler: libc::sighandler_t| {
        // SAFETY: sigaction structs are plain-old-data; zeroed is valid (empty mask).
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = handler;
        new.sa_flags = libc::SA_RESTART;
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to initialised sigaction structs; `handler` is SIG_IGN or
        // an async-signal-safe extern "C" function.
        unsafe { libc::sigaction(sig, &new, &mut old) };
        (sig, old)
    };
    let forward = forward_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    SavedSignals([
        install(libc::SIGINT, libc::SIG_IGN),
        install(libc::SIGQUIT, libc::SIG_IGN),
        install(libc::SIGTERM, forward),
        install(libc::SIGHUP, forward),
    ])
}

/// Restores the dispositions saved by [`supervise_signals`].
pub(crate) fn restore_signals(saved: SavedSignals) {
    for (sig, old) in saved.0 {
        // SAFETY: reinstalling a disposition the kernel returned earlier.
        unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
    }
    PROGRAM_PID.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// Landlock (the kernel's unprivileged access-control LSM): the rights `pfs run` uses to
/// enforce `sgx.file_check_policy = "strict"`. Values are the kernel UAPI's
/// `LANDLOCK_ACCESS_FS_*` bits (`include/uapi/linux/landlock.h`).
pub(crate) mod landlock {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Path;

    /// Execute a file (execve; also the ELF interpreter the kernel loads).
    pub(crate) const EXECUTE: u64 = 1 << 0;
    /// Open a file for writing.
    pub(crate) const WRITE_FILE: u64 = 1 << 1;
    /// Open a file for reading.
    pub(crate) const READ_FILE: u64 = 1 << 2;
    /// Unlink a file.
    pub(crate) const REMOVE_FILE: u64 = 1 << 5;
    /// Create a character device.
    pub(crate) const MAKE_CHAR: u64 = 1 << 6;
    /// Create a regular file.
    pub(crate) const MAKE_REG: u64 = 1 << 8;
    /// Create a UNIX socket.
    pub(crate) const MAKE_SOCK: u64 = 1 << 9;
    /// Create a named pipe.
    pub(crate) const MAKE_FIFO: u64 = 1 << 10;
    /// Create a block device.
    pub(crate) const MAKE_BLOCK: u64 = 1 << 11;
    /// Create a symbolic link.
    pub(crate) const MAKE_SYM: u64 = 1 << 12;
    /// Link or rename a file into another directory (ABI 2; denied unless granted).
    pub(crate) const REFER: u64 = 1 << 13;
    /// Truncate a file (ABI 3).
    pub(crate) const TRUNCATE: u64 = 1 << 14;
    /// The rights that apply to a file (the kernel refuses the others in a rule on a file).
    pub(crate) const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE;

    const CREATE_RULESET_VERSION: u32 = 1;
    const RULE_PATH_BENEATH: libc::c_int = 1;

    /// `struct landlock_ruleset_attr`, only its first field: the kernel accepts the shorter
    /// struct from every ABI version, and network/scope rights are not used.
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
    }

    /// `struct landlock_path_beneath_attr` (packed in the UAPI).
    #[repr(C, packed)]
    struct PathBeneathAttr {
        allowed_access: u64,
        parent_fd: i32,
    }

    /// The Landlock ABI version of the running kernel (ENOSYS: not built in; EOPNOTSUPP:
    /// built in but not enabled at boot).
    pub(crate) fn abi_version() -> io::Result<u32> {
        // SAFETY: with a NULL attribute, size 0 and the VERSION flag the call only returns
        // a number and reads no memory.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<RulesetAttr>(),
                0usize,
                CREATE_RULESET_VERSION,
            )
        };
        if v < 0 { Err(io::Error::last_os_error()) } else { Ok(v as u32) }
    }

    /// Creates a ruleset (a close-on-exec fd) that restricts the `handled` rights.
    pub(crate) fn create_ruleset(handled: u64) -> io::Result<OwnedFd> {
        let attr = RulesetAttr { handled_access_fs: handled };
        // SAFETY: `attr` is a valid struct of the size passed, alive during the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                std::mem::size_of::<RulesetAttr>(),
                0u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }

    /// Opens `path` with `O_PATH` (no read or write access, no FUSE open; symlinks followed).
    pub(crate) fn open_path(path: &Path) -> io::Result<OwnedFd> {
        let c = super::cpath(path)?;
        // SAFETY: `c` is a valid C string; the returned fd is owned by the OwnedFd below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Grants `allowed` beneath the file or directory `target` (an `O_PATH` fd).
    pub(crate) fn add_rule(ruleset: &OwnedFd, target: &OwnedFd, allowed: u64) -> io::Result<()> {
        let attr = PathBeneathAttr { allowed_access: allowed, parent_fd: target.as_raw_fd() };
        // SAFETY: both fds are open; `attr` is a valid packed struct alive during the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset.as_raw_fd(),
                RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0u32,
            )
        };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}
