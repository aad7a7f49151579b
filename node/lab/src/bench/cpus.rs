//! Which CPUs a benchmark's processes run on: the nodes on all but the
//! last, an attacker on the last, so that neither side's work shows up as
//! the other's cost.

/// The CPUs this machine has, and the split of them: (nodes, attacker);
/// no split on one CPU.
pub fn split() -> Option<(Vec<usize>, usize)> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n >= 2).then(|| ((0..n - 1).collect(), n - 1))
}

/// Pins the calling thread, and every thread it starts from now on, to
/// `cpus` (Linux; elsewhere nothing is pinned).
pub fn pin_to(cpus: &[usize]) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `set` is a plain bit mask owned here; the call reads it.
        let result = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        anyhow::ensure!(result == 0, "pinning to CPUs {cpus:?}: {}", std::io::Error::last_os_error());
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpus;
    Ok(())
}
