//! The conventional `process_*` metrics every Prometheus client exports (CPU time,
//! resident memory, file descriptors, start time), read from `/proc` on Linux; on
//! other systems they are left out rather than guessed.
//!
//! Everything comes from files, so no system call wrapper (and no `unsafe`) is needed:
//! - CPU time and start time from `/proc/self/stat`, in clock ticks of 1/100 s (the
//!   kernel's `USER_HZ`, fixed at 100 on every Linux architecture that user space can
//!   see, which is why Prometheus's own procfs reader does not ask `sysconf` either);
//!   the start time is counted from boot, so `/proc/stat`'s `btime` is added.
//! - Resident memory from `/proc/self/status` (`VmRSS`, in KiB): the same figure as
//!   `/proc/self/statm`'s resident pages, without needing the page size.
//! - Open descriptors by listing `/proc/self/fd`; their limit (the soft
//!   `RLIMIT_NOFILE`, as `getrlimit` gives it) from `/proc/self/limits`.
//!
//! A figure that cannot be read (a `/proc` without it) is left out, not written as 0.

use super::sample_f64;

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`).
const TICKS_PER_SEC: f64 = 100.0;

/// Writes the `process_*` metrics that can be read on this system.
pub(super) fn write(out: &mut String) {
    #[cfg(target_os = "linux")]
    write_linux(out);
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

#[cfg(target_os = "linux")]
fn write_linux(out: &mut String) {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let stat = read("/proc/self/stat").and_then(|text| Stat::parse(&text));
    if let Some(stat) = stat {
        sample_f64(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stat.cpu_ticks as f64 / TICKS_PER_SEC,
        );
    }
    if let Some(kib) = read("/proc/self/status").and_then(|text| resident_kib(&text)) {
        sample_f64(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (kib * 1024) as f64,
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        sample_f64(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            entries.count() as f64,
        );
    }
    if let Some(max) = read("/proc/self/limits").and_then(|text| max_open_files(&text)) {
        sample_f64(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    let boot = read("/proc/stat").and_then(|text| boot_time(&text));
    if let (Some(stat), Some(boot)) = (stat, boot) {
        sample_f64(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot as f64 + stat.start_ticks as f64 / TICKS_PER_SEC,
        );
    }
}

/// What `/proc/PID/stat` says of the process, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    /// User plus system time (fields 14 and 15).
    cpu_ticks: u64,
    /// When the process started, after boot (field 22).
    start_ticks: u64,
}

impl Stat {
    /// Parses the one line of `/proc/PID/stat`. The command name (field 2) is in
    /// parentheses and may hold spaces and parentheses itself, so the fields are
    /// counted from the last `)`.
    fn parse(text: &str) -> Option<Stat> {
        let (_, rest) = text.rsplit_once(')')?;
        // Field 3 (the state) is the first after the name.
        let field = |n: usize| rest.split_whitespace().nth(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            cpu_ticks: field(14)?.checked_add(field(15)?)?,
            start_ticks: field(22)?,
        })
    }
}

/// `VmRSS` of `/proc/PID/status`, in KiB.
fn resident_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The soft limit on open files in `/proc/PID/limits` (infinity when "unlimited").
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line["Max open files".len()..].split_whitespace().next()? {
        "unlimited" => Some(f64::INFINITY),
        soft => soft.parse::<u64>().ok().map(|n| n as f64),
    }
}

/// The boot time in seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line = "5296 (a (b) c) R 5291 5291 31634 0 -1 4194304 99 0 0 0 120 30 0 0 20 0 \
                    1 0 947841 3133440 412 18446744073709551615 0\n";
        let stat = Stat::parse(line).expect("parses");
        assert_eq!(
            stat,
            Stat {
                cpu_ticks: 150,
                start_ticks: 947841
            }
        );
        assert_eq!(Stat::parse("5296 (cat) R 1 2"), None);
        assert_eq!(Stat::parse(""), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        let status = "Name:\tcat\nVmPeak:\t 3060 kB\nVmRSS:\t    2164 kB\nThreads:\t1\n";
        assert_eq!(resident_kib(status), Some(2164));
        assert_eq!(resident_kib("Name:\tcat\n"), None);

        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             96367                96367                processes \n\
                      Max open files            20000                40000                files     \n";
        assert_eq!(max_open_files(limits), Some(20000.0));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), Some(f64::INFINITY));

        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1796658341\nprocesses 9\n"),
            Some(1796658341)
        );
        assert_eq!(boot_time("cpu  1 2 3\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_all_five() {
        let mut out = String::new();
        write(&mut out);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(out.contains(&format!("\n{name}")), "{name}missing: {out}");
        }
    }
}
