//! Generation below the HTTP threads in the scheduler's eyes. On a CPU-only machine a
//! generation keeps every core busy; at equal priority a status poll waits behind it for a
//! scheduler slice (several ms). Niceness is per thread on Linux, and threads inherit it.

/// The nice value of compute threads: low enough that request threads preempt them at once,
/// while an idle server still gives generation every cycle.
pub const COMPUTE_NICE: i32 = 10;

/// Runs `work` on a new thread at compute priority; the receiver yields its result, or an
/// error if the thread panicked. A fresh thread rather than tokio's blocking pool, because
/// an unprivileged thread cannot raise its priority back, and pooled threads are reused
/// for file I/O that must stay fast.
pub fn spawn_compute<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<T>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kiln-compute".into())
        .spawn(move || {
            lower_current_thread();
            let _ = tx.send(work());
        })?;
    Ok(rx)
}

/// Lowers the calling thread's priority to [`COMPUTE_NICE`] (Linux; elsewhere nothing).
pub fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid takes no arguments; setpriority on our own thread id only changes its
    // scheduling priority. Failure (a sandbox forbidding it) leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, COMPUTE_NICE);
    }
}

/// Builds the global rayon pool (candle's CPU matmuls and kernels run there) with compute
/// priority. Call before anything runs tensor code; a pool already built is left alone.
pub fn init_compute_pool() {
    let _ = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| lower_current_thread())
        .build_global();
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn lowering_changes_only_this_thread() {
        let nice = || {
            // SAFETY: reads our own thread's priority.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            }
        };
        let before = nice();
        let lowered = std::thread::spawn(move || {
            super::lower_current_thread();
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, super::COMPUTE_NICE.max(before));
        assert_eq!(nice(), before, "the calling thread keeps its priority");
    }
}
