//! The server's CPU time and memory, read from /proc when `--server-pid` is given.

use anyhow::Context;

/// Clock ticks per second of /proc/PID/stat times. Linux fixes USER_HZ at 100 on every
/// architecture it exposes to user space, so no `sysconf` call (and no `unsafe`) is needed.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads one process's resource use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerProbe {
    pid: u32,
}

impl ServerProbe {
    pub(crate) fn new(pid: u32) -> Self {
        ServerProbe { pid }
    }

    /// User plus system CPU seconds the process has used so far (all its threads).
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_cpu_ticks(&stat)
            .map(|ticks| ticks as f64 / TICKS_PER_SECOND)
            .with_context(|| format!("unexpected format of {path}"))
    }

    /// Resident set size in KiB.
    pub(crate) fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_rss_kib(&status).with_context(|| format!("no VmRSS in {path}"))
    }
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command name (field 2)
/// is in parentheses and may hold spaces or parentheses, so fields are counted after the
/// last `)`, where field 3 begins.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmRSS:   1234 kB` line of /proc/PID/status.
fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_past_an_awkward_command_name() {
        let stat = "1234 (my (odd) hub) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 9 0 100 1000000 300 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn reads_rss() {
        let status = "Name:\tactionhub\nVmPeak:\t  9000 kB\nVmRSS:\t  4321 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(4321));
    }

    #[test]
    fn reads_this_process() {
        let probe = ServerProbe::new(std::process::id());
        assert!(probe.rss_kib().unwrap() > 0);
        assert!(probe.cpu_seconds().unwrap() >= 0.0);
    }
}
