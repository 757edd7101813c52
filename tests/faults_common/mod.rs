//! Helpers shared by the fault tests (`tests/faults_*.rs`).

#![allow(dead_code, unreachable_pub)]

/// Whether `pid` runs; a zombie waiting to be reaped counts as dead.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Sends `sig` to each of `pids`.
pub fn signal(pids: &[u32], sig: libc::c_int) {
    for &pid in pids {
        // SAFETY: kill(2) on processes the test started; a pid already gone yields ESRCH.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}
