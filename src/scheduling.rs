//! How the server's threads share a core: the connections first, the
//! database behind the message log second.
//!
//! Why: a chat message's latency is set by how soon the connections' thread
//! runs once a packet has arrived. On Linux 6.6 and later (EEVDF) a thread
//! that has just been given the core keeps it for its slice (0.75 ms times
//! 1 + log2 of the CPUs, ended at a 4 ms tick at worst) before a waking thread
//! of the same class takes over, unless that thread is *eligible* (owed CPU
//! time) and asks for a *shorter slice*. At 10,000 messages/s the SQLite
//! threads behind the message log held up the connections' thread by
//! 0.3–3 ms 30–95 times in 3 s this way (`docs/benchmarks.md`, the ninth
//! session's round). Two settings together remove almost all of it, and
//! neither needs privileges:
//!
//! - the runtime's threads ask for a short slice ([`favour_connections_thread`]:
//!   `sched_setattr`'s `sched_runtime`, honoured for ordinary threads since
//!   Linux 6.12 and ignored before), so that waking they may preempt a thread
//!   with a longer one at once; the thread that flushes the message log asks
//!   for a shorter one still ([`favour_flushing_thread`]);
//! - the database's threads behind the message log, which no chat message
//!   waits for, run at nice 19 ([`lower_priority`]): their weight is then so
//!   small beside the runtime's that the runtime's thread is nearly always
//!   eligible when it wakes. Idle time is still all theirs, and on a full
//!   core they still get 1.4% (`SCHED_IDLE` would leave them 0.3%, and an
//!   unprivileged thread cannot leave it again).
//!
//! Either alone halved the delays at best; each is one system call per thread.

/// The slice the runtime's threads ask for: shorter than the default
/// (0.75–3 ms), so that a waking connection thread preempts a database
/// thread, and longer than the flushing thread's.
const CONNECTIONS_SLICE_NS: u64 = 300_000;

/// The slice of the thread that flushes the message log (`synchronous =
/// full`), the kernel's shortest: every message waits for its flush, so when
/// one completes it should preempt even the connections' thread. With equal
/// slices it waited behind that thread 80 times in 3 s, by over 0.3 ms.
const FLUSH_SLICE_NS: u64 = 100_000;

/// Nice level of the database threads behind the message log (the lowest).
const BACKGROUND_NICE: i32 = 19;

/// For the runtime's threads, which serve the connections: asks the
/// scheduler to let the calling thread preempt longer-sliced threads when
/// it wakes (see the module comment). A failure is logged at debug level and
/// otherwise ignored: the thread then runs as any other.
pub fn favour_connections_thread() {
    favour_this_thread(CONNECTIONS_SLICE_NS);
}

/// For the thread that flushes the message log: as
/// [`favour_connections_thread`], and ahead of the connections' threads.
pub fn favour_flushing_thread() {
    favour_this_thread(FLUSH_SLICE_NS);
}

fn favour_this_thread(slice_ns: u64) {
    #[cfg(target_os = "linux")]
    if let Err(e) = linux::set_nice_and_slice(0, None, slice_ns) {
        tracing::debug!(error = %e, "the scheduler did not take a shorter slice for this thread");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = slice_ns;
}

/// For a load generator's measuring thread: the real-time policy
/// (`SCHED_FIFO`, the lowest real-time priority), so that it runs the moment
/// it wakes, ahead of every ordinary thread on its core, and the latencies
/// it measures carry less of its own scheduling. Needs `CAP_SYS_NICE` (root);
/// without it the thread stays as it is and the error says why. Never for
/// the server's own threads: a busy real-time thread starves the rest.
pub fn realtime_this_thread() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    return linux::set_fifo(1);
    #[cfg(not(target_os = "linux"))]
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "real-time scheduling is set on Linux only"))
}

/// Lowers `threads` (thread ids) to the background nice level, with the
/// default slice: a thread started by one of the runtime's inherits its short
/// slice, and the runtime's threads preempt only threads with longer ones.
/// Raising a nice level needs no privileges.
pub fn lower_priority<'a>(threads: impl IntoIterator<Item = &'a i32>) {
    #[cfg(target_os = "linux")]
    for &tid in threads {
        if let Err(e) = linux::set_nice_and_slice(tid, Some(BACKGROUND_NICE), 0) {
            tracing::warn!(error = %e, tid, "could not lower a database thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = threads;
}

/// Lowers the calling thread to the background nice level.
pub fn lower_priority_of_this_thread() {
    #[cfg(target_os = "linux")]
    lower_priority(&[0]);
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux {
    /// `struct sched_attr` of `sched_setattr(2)`, the first version (48 bytes).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        sched_policy: u32,
        sched_flags: u64,
        sched_nice: i32,
        sched_priority: u32,
        sched_runtime: u64,
        sched_deadline: u64,
        sched_period: u64,
    }

    /// Sets thread `tid`'s (0: the calling thread's) nice level (`None`:
    /// keeps it) and slice (0: the kernel's default) under the ordinary
    /// policy. rustix does not wrap `sched_setattr`, hence the call.
    pub(super) fn set_nice_and_slice(tid: i32, nice: Option<i32>, slice_ns: u64) -> std::io::Result<()> {
        let nice = match nice {
            Some(nice) => nice,
            None => rustix::process::getpriority_process(rustix::process::Pid::from_raw(tid))?,
        };
        set(tid, libc::SCHED_OTHER, nice, 0, slice_ns)
    }

    /// Puts the calling thread under `SCHED_FIFO` at `priority`.
    pub(super) fn set_fifo(priority: u32) -> std::io::Result<()> {
        set(0, libc::SCHED_FIFO, 0, priority, 0)
    }

    fn set(tid: i32, policy: i32, nice: i32, priority: u32, slice_ns: u64) -> std::io::Result<()> {
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: policy as u32,
            sched_flags: 0,
            sched_nice: nice,
            sched_priority: priority,
            sched_runtime: slice_ns,
            sched_deadline: 0,
            sched_period: 0,
        };
        // SAFETY: `attr` is a valid, initialised `sched_attr` of the size it
        // states, alive for the call, and the kernel only reads it.
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &attr as *const SchedAttr, 0u32) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The slice as the kernel reports it for `tid` (`se.slice` in
    /// `/proc/<tid>/sched`, in nanoseconds).
    fn slice_of(tid: i32) -> Option<u64> {
        let sched = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).ok()?;
        sched.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "se.slice").then(|| value.trim().parse().ok())?
        })
    }

    /// On a kernel before 6.12 (no `se.slice`) the slices cannot be seen;
    /// the nice levels must hold all the same.
    #[test]
    fn the_favoured_threads_get_their_short_slices_and_a_lowered_one_nice_19_and_the_default_slice() {
        std::thread::spawn(|| {
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            let default = slice_of(tid);
            if default.is_none() {
                eprintln!("this kernel has no custom slices (before Linux 6.12): only the nice levels are checked");
            }
            let expect_slice = move |slice_ns| default.map(|_| slice_ns);
            let nice = rustix::process::getpriority_process(None).unwrap();
            favour_flushing_thread();
            assert_eq!(slice_of(tid), expect_slice(FLUSH_SLICE_NS));
            favour_connections_thread();
            assert_eq!(slice_of(tid), expect_slice(CONNECTIONS_SLICE_NS));
            assert_eq!(rustix::process::getpriority_process(None).unwrap(), nice, "the nice level is kept");
            // What a thread started now inherits, lowering takes away.
            std::thread::spawn(move || {
                let tid = rustix::thread::gettid().as_raw_nonzero().get();
                assert_eq!(slice_of(tid), expect_slice(CONNECTIONS_SLICE_NS));
                lower_priority_of_this_thread();
                assert_eq!(rustix::process::getpriority_process(None).unwrap(), BACKGROUND_NICE);
                assert_eq!(slice_of(tid), default);
            })
            .join()
            .unwrap();
        })
        .join()
        .unwrap();
    }

    /// As root (CI, the benchmark) the thread takes `SCHED_FIFO`; without
    /// the privilege it must be refused as such and stay as it was.
    #[test]
    fn a_measuring_thread_takes_the_real_time_policy_or_is_told_why_not() {
        std::thread::spawn(|| {
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            let policy = || {
                let sched = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).unwrap();
                sched.lines().find_map(|l| {
                    l.split_once(':').filter(|(k, _)| k.trim() == "policy").map(|(_, v)| v.trim().to_owned())
                })
            };
            match realtime_this_thread() {
                Ok(()) => assert_eq!(policy().as_deref(), Some("1"), "SCHED_FIFO"),
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
                    eprintln!("not privileged: the refusal was checked, not the policy");
                    assert_eq!(policy().as_deref(), Some("0"), "still SCHED_OTHER");
                }
            }
        })
        .join()
        .unwrap();
    }
}
