//! The server's CPU time and memory, read from Linux's `/proc/PID/stat` and
//! `/proc/PID/status`, so a run can report messages per server CPU-second: a figure
//! that stays stable on a noisy machine, where messages per wall-clock second do not.
//!
//! On systems without `/proc` the readings are absent and the summary has no `server`
//! section.

use std::fs;

/// Clock ticks per second of the utime/stime fields: `USER_HZ`, which Linux fixes at
/// 100 for every architecture's user-visible interfaces.
const TICKS_PER_SEC: f64 = 100.0;

/// One process to watch.
#[derive(Debug, Clone, Copy)]
pub struct ServerProcess {
    pid: u32,
}

impl ServerProcess {
    /// Watches process `pid`.
    pub fn new(pid: u32) -> Self {
        ServerProcess { pid }
    }

    /// CPU seconds used so far in user space and in the kernel, all threads together.
    pub fn cpu_secs(&self) -> Option<CpuTime> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        parse_cpu_ticks(&stat).map(|(user, system)| CpuTime {
            user: user as f64 / TICKS_PER_SEC,
            system: system as f64 / TICKS_PER_SEC,
        })
    }

    /// Resident memory now and its peak so far (VmRSS, VmHWM), in KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        Some((
            status_field(&status, "VmRSS:")?,
            status_field(&status, "VmHWM:")?,
        ))
    }
}

/// CPU time of a process, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    /// In user space.
    pub user: f64,
    /// In the kernel (system calls: for an echo server, most of the cost).
    pub system: f64,
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;
    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// (utime, stime) from the text of `/proc/PID/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state (3), ppid (4), ... utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// A `Name:   1234 kB` line's number.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_fields_14_and_15() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some((250, 31)));
    }

    #[test]
    fn memory_fields_are_read_in_kib() {
        let status = "Name:\tswitchboard\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(1024));
        assert_eq!(status_field(status, "VmHWM:"), Some(2048));
        assert_eq!(status_field(status, "VmSwap:"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_process() {
        let me = ServerProcess::new(std::process::id());
        assert!(me.cpu_secs().is_some());
        let (rss, hwm) = me.memory_kib().unwrap();
        assert!(rss > 0 && hwm >= rss);
    }
}
