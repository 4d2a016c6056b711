//! Starting an exec-mode handler without fork: a child made with `clone(CLONE_VM | CLONE_VFORK)`
//! that joins a process group of its own, sets its death signal and calls `execve`.
//!
//! Why not std: the death signal (`PR_SET_PDEATHSIG`) can only be set from a `pre_exec` hook,
//! and a hook makes std fork, copying the worker's page tables at every job; std also copies
//! the whole environment into a map at every spawn that sets a variable. `posix_spawn` shares
//! the parent's memory like this but cannot set the death signal. No maintained crate starts a
//! child this way with a death signal, so this module does, in as little unsafe code as it
//! can: the argv and the worker's environment are made C strings once per worker
//! ([`Template`]), each job's variables are appended at its spawn.
//!
//! The child shares the worker's memory until it execs, and the spawning thread is suspended
//! meanwhile (CLONE_VFORK). Invariants of the child's code (`child_main`):
//! - it runs on a stack of its own (`Stack`), never on the suspended thread's;
//! - it allocates nothing and only makes async-signal-safe calls (setpgid, prctl, getppid,
//!   dup2, sigaction, sigprocmask, execve, _exit); everything it reads (`Args`, the argv and
//!   envp arrays and their strings) was prepared by the parent and stays alive and unchanged
//!   until `clone` returns, because the parent is suspended until then;
//! - it writes only its own stack, `Args::errno` (an atomic the parent reads after `clone`
//!   returns) and, through libc's wrappers, `errno`, which is the suspended thread's (the child
//!   keeps its thread pointer): harmless, the parent reads no `errno` after a clone that
//!   succeeded, and the child's `errno` value is what it reports;
//! - no handler of the worker's signals can run in it: the parent blocks every signal around
//!   `clone`, and the child resets every caught signal to its default (its table of handlers
//!   is its own copy: no CLONE_SIGHAND) before it opens its signal mask for the handler.
//!
//! The parent gets a pidfd with the child (CLONE_PIDFD), waits for it through tokio's reactor
//! and reaps it with `waitpid` on its pid only (never -1, which would steal tokio's children).
//! Where pidfds are missing (kernels before 5.3; valgrind, which does not know `pidfd_open`)
//! or the flags are refused (a seccomp filter), [`supported`] says no and the caller uses
//! std's spawn, with the same guarantees at fork's price.

use std::ffi::{c_char, c_int, c_void, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe;

/// Set once a clone with these flags was refused: every later spawn of the process uses std's.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether handlers can be started this way here: the kernel has pidfds, and no clone with
/// these flags has been refused.
pub fn supported() -> bool {
    static PIDFDS: OnceLock<bool> = OnceLock::new();
    !REFUSED.load(Ordering::Relaxed)
        && *PIDFDS.get_or_init(|| {
            // SAFETY: pidfd_open on our own pid takes no pointer; the fd is closed at once.
            unsafe {
                let fd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0);
                if fd >= 0 {
                    libc::close(fd as c_int);
                }
                fd >= 0
            }
        })
}

/// The child's stack: mapped once per worker, with a guard page below it (stacks grow down on
/// every Linux target the project builds for), reused by every spawn under its mutex.
struct Stack {
    base: *mut c_void,
    len: usize,
    guard: usize,
}

// SAFETY: the mapping is owned by the Stack alone and only used under the Template's mutex.
unsafe impl Send for Stack {}

/// Enough for `child_main`'s few frames (a `sigaction` struct, libc's thin wrappers).
const STACK_BYTES: usize = 64 * 1024;

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; the
        // guard page is part of it.
        unsafe {
            let guard = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
            let len = STACK_BYTES + guard;
            let base = libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Stack { base, len, guard };
            if libc::mprotect(base, guard, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// The top of the stack, 16-byte aligned (the mapping is page-aligned).
    fn top(&self) -> *mut c_void {
        debug_assert!(self.len > self.guard);
        // SAFETY: one past the end of the mapping, which is what clone wants.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// What every spawn of one worker's handler shares: its argv, the environment it inherits
/// (the worker's, taken once, with the worker's fixed variables), the program's path, and the
/// stack its children start on.
pub struct Template {
    argv: Vec<CString>,
    env: Vec<CString>,
    /// `argv[0]` found on `PATH` (looked up again after an exec that did not find it).
    program: Mutex<Option<CString>>,
    stack: Mutex<Stack>,
    /// The worker: a child that sees another parent was orphaned before its death signal was
    /// set, and leaves.
    parent: libc::pid_t,
}

/// A child's pipes, the parent's ends.
pub struct Spawned {
    pub child: Child,
    pub stdin: pipe::Sender,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

fn var(name: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut bytes = Vec::with_capacity(name.len() + 1 + value.len());
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(b'=');
    bytes.extend_from_slice(value.as_bytes());
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte found in provided data"))
}

impl Template {
    /// `fixed`: variables every run gets; `per_job`: the names each spawn sets (left out of
    /// the inherited environment, as std's `env` replaces them). `None` when the argv cannot
    /// be passed to execve (a NUL byte): std's spawn then says so at each job.
    pub fn new(argv: &[String], fixed: &[(&str, &str)], per_job: &[&str]) -> Option<Template> {
        let argv: Vec<CString> = argv.iter().map(|a| CString::new(a.as_bytes()).ok()).collect::<Option<_>>()?;
        if argv.is_empty() {
            return None;
        }
        let replaced =
            |k: &OsStr| fixed.iter().any(|(n, _)| OsStr::new(n) == k) || per_job.iter().any(|n| OsStr::new(n) == k);
        let mut env: Vec<CString> =
            std::env::vars_os().filter(|(k, _)| !replaced(k)).filter_map(|(k, v)| var(&k, &v).ok()).collect();
        env.extend(fixed.iter().filter_map(|(k, v)| var(OsStr::new(k), OsStr::new(v)).ok()));
        let stack = Stack::new().ok()?;
        Some(Template {
            argv,
            env,
            program: Mutex::new(None),
            stack: Mutex::new(stack),
            parent: std::process::id() as libc::pid_t,
        })
    }

    fn program(&self) -> io::Result<CString> {
        let mut cached = self.program.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cached.as_ref() {
            return Ok(p.clone());
        }
        let found = find_program(&self.argv[0]).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        *cached = Some(found.clone());
        Ok(found)
    }

    /// Starts one run with its job's variables, stdin, stdout and stderr piped. `Ok(None)`:
    /// the kernel refused the clone's flags; nothing was started, and the caller (and every
    /// later spawn, [`supported`]) uses std's spawn instead.
    pub fn spawn(&self, vars: &[(&str, &OsStr)]) -> io::Result<Option<Spawned>> {
        let program = self.program()?;
        let job_vars: Vec<CString> = vars.iter().map(|(k, v)| var(OsStr::new(k), v)).collect::<io::Result<_>>()?;
        let mut argv: Vec<*const c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(ptr::null());
        let mut envp: Vec<*const c_char> = Vec::with_capacity(self.env.len() + job_vars.len() + 1);
        envp.extend(self.env.iter().chain(&job_vars).map(|v| v.as_ptr()));
        envp.push(ptr::null());

        let (stdin_r, stdin_w) = pipe_pair()?;
        let (stdout_r, stdout_w) = pipe_pair()?;
        let (stderr_r, stderr_w) = pipe_pair()?;
        let args = Args {
            path: program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            fds: [stdin_r.as_raw_fd(), stdout_w.as_raw_fd(), stderr_w.as_raw_fd()],
            parent: self.parent,
            errno: AtomicI32::new(0),
        };
        let mut pidfd: c_int = -1;
        let stack = self.stack.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: see the module's invariants. `args`, `argv`, `envp`, `program`, `job_vars`
        // and the pipes live on until after `clone` returns (the child has exec'd or exited by
        // then); the stack is ours under its lock; every signal is blocked around the call and
        // the mask restored after it.
        let (pid, clone_errno) = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                &args as *const Args as *mut c_void,
                &mut pidfd as *mut c_int,
                ptr::null_mut::<c_void>(),
                ptr::null_mut::<libc::pid_t>(),
            );
            let clone_errno = if pid < 0 { io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { 0 };
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
            (pid, clone_errno)
        };
        drop(stack);
        if pid < 0 {
            if matches!(clone_errno, libc::EINVAL | libc::ENOSYS | libc::EPERM) {
                REFUSED.store(true, Ordering::Relaxed);
                tracing::info!(
                    "clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD) refused here ({}): handlers start through fork",
                    io::Error::from_raw_os_error(clone_errno)
                );
                return Ok(None);
            }
            return Err(io::Error::from_raw_os_error(clone_errno));
        }
        // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let failed = args.errno.load(Ordering::SeqCst);
        if failed != 0 {
            // The child reported why it could not exec, and has exited: reap it.
            reap_blocking(pid);
            if failed == libc::ENOENT {
                *self.program.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            return Err(io::Error::from_raw_os_error(failed));
        }
        drop((stdin_r, stdout_w, stderr_w));
        let wrap = || -> io::Result<Spawned> {
            // SAFETY: the OwnedFd is the pidfd's only owner and goes into the AsyncFd with it.
            let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }?;
            Ok(Spawned {
                child: Child { pid, pidfd: Some(pidfd), status: None },
                stdin: pipe::Sender::from_owned_fd_unchecked(nonblocking(stdin_w)?)?,
                stdout: pipe::Receiver::from_owned_fd_unchecked(nonblocking(stdout_r)?)?,
                stderr: pipe::Receiver::from_owned_fd_unchecked(nonblocking(stderr_r)?)?,
            })
        };
        wrap().map(Some).inspect_err(|_| {
            // SAFETY: our child, not reaped yet; its group is its own.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap_blocking(pid);
        })
    }
}

/// What the child reads (and, on failure, writes `errno` to). Lives on the parent's stack.
#[repr(C)]
struct Args {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// The child's stdin, stdout and stderr: descriptors above 2 (`pipe_pair`), so that no
    /// `dup2` overwrites one still to be copied.
    fds: [RawFd; 3],
    parent: libc::pid_t,
    errno: AtomicI32,
}

/// Reports the child's `errno` to the parent and leaves.
unsafe fn fail(a: &Args) -> ! {
    a.errno.store(*libc::__errno_location(), Ordering::SeqCst);
    libc::_exit(127)
}

/// Linux's `_NSIG` on the targets the project builds for (x86-64, aarch64): signals 1 to 64.
const NSIG: c_int = 65;

/// The child, between clone and execve. See the module's invariants; returns only by `_exit`.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `Args`, alive and unchanged while the parent is suspended;
    // every call below is async-signal-safe and allocates nothing.
    unsafe {
        let a = &*(arg as *const Args);
        // The group the worker signals on a timeout, a drain or a lost job.
        if libc::setpgid(0, 0) != 0 {
            fail(a);
        }
        // Die with the worker. The death signal follows the thread that cloned: `drover work`
        // spawns from its main thread, which lives as long as the worker.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            fail(a);
        }
        // The worker died before the death signal was set: it will never come. Nobody waits
        // for a report.
        if libc::getppid() != a.parent {
            libc::_exit(127);
        }
        for (target, &fd) in a.fds.iter().enumerate() {
            if libc::dup2(fd, target as c_int) < 0 {
                fail(a);
            }
        }
        // Every caught signal back to its default (execve would do it too, but a signal could
        // arrive before, and its handler would run here, on the worker's memory); SIGPIPE,
        // which Rust's runtime ignores, to its default as std does for its children.
        for sig in 1..NSIG {
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, ptr::null(), &mut sa) != 0 {
                continue; // SIGKILL, SIGSTOP, libc's own signals: nothing to reset
            }
            let default = sa.sa_sigaction == libc::SIG_DFL;
            let ignored = sa.sa_sigaction == libc::SIG_IGN;
            if default || (ignored && sig != libc::SIGPIPE) {
                continue;
            }
            sa.sa_sigaction = libc::SIG_DFL;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, ptr::null_mut());
        }
        // The handler starts with no signal blocked, as std's children do.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
        libc::execve(a.path, a.argv, a.envp);
        fail(a)
    }
}

/// A pipe, both ends close-on-exec and above 2 (the child's `dup2` targets).
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, owned from here on.
    let (r, w) = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (3 or above), owned from here on.
    unsafe {
        let moved = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3);
        if moved < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(moved))
    }
}

fn nonblocking(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on a descriptor we own. Each end of a pipe has its own file description,
    // so the child's end stays blocking.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// `argv[0]` as execvp would find it: itself when it names a path, else the first executable
/// file of that name on the worker's `PATH`.
fn find_program(name: &CString) -> Option<CString> {
    let bytes = name.as_bytes();
    if bytes.contains(&b'/') {
        return Some(name.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).find_map(|dir| {
        let candidate = if dir.as_os_str().is_empty() {
            std::path::PathBuf::from(OsStr::from_bytes(bytes))
        } else {
            dir.join(OsStr::from_bytes(bytes))
        };
        let c = CString::new(candidate.as_os_str().as_bytes()).ok()?;
        let file = std::fs::metadata(&candidate).map(|m| m.is_file()).unwrap_or(false);
        // SAFETY: access reads the NUL-terminated path only.
        (file && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0).then_some(c)
    })
}

/// Waits for a child known to have exited or to be exiting (it reported a failure, or was just
/// sent SIGKILL).
fn reap_blocking(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child's pid only.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

/// A running handler started by [`Template::spawn`]. Dropped before it was reaped, it is
/// killed (its process, as std's `kill_on_drop`; the group is the caller's to signal) and
/// reaped in the background.
pub struct Child {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl Child {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own, not yet reaped, child.
            match unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } {
                0 => return Ok(None),
                p if p > 0 => {
                    let s = ExitStatus::from_raw(status);
                    self.status = Some(s);
                    return Ok(Some(s));
                }
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Waits for the child to exit (its pidfd turns readable) and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.try_reap()? {
                return Ok(s);
            }
            let Some(fd) = self.pidfd.as_ref() else { return Err(io::Error::other("no pidfd")) };
            let mut ready = fd.readable().await?;
            ready.clear_ready();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() || matches!(self.try_reap(), Ok(Some(_))) {
            return;
        }
        // SAFETY: our child, not reaped yet, so its pid is still its own.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let (pid, pidfd) = (self.pid, self.pidfd.take());
        match (tokio::runtime::Handle::try_current(), pidfd) {
            (Ok(rt), Some(fd)) => {
                rt.spawn(async move {
                    let mut status = 0;
                    // SAFETY: waitpid on our own child's pid; a SIGKILLed child exits soon.
                    while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
                        match fd.readable().await {
                            Ok(mut ready) => ready.clear_ready(),
                            Err(_) => break,
                        }
                    }
                });
            }
            _ => reap_blocking(pid),
        }
    }
}
