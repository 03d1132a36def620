//! The server's CPU time and memory, read from /proc when `--server-pid` is given: of one
//! process, or summed over a cluster's nodes.

use anyhow::Context;

/// Clock ticks per second of /proc/PID/stat times. Linux fixes USER_HZ at 100 on every
/// architecture it exposes to user space, so no `sysconf` call (and no `unsafe`) is needed.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads the resource use of the server's processes (one, or a cluster's nodes).
#[derive(Debug, Clone)]
pub(crate) struct ServerProbe {
    pids: Vec<u32>,
}

impl ServerProbe {
    /// A probe of one process.
    pub(crate) fn new(pid: u32) -> Self {
        ServerProbe { pids: vec![pid] }
    }

    /// A probe of `pids`; `None` when there are none.
    pub(crate) fn of(pids: &[u32]) -> Option<Self> {
        (!pids.is_empty()).then(|| ServerProbe {
            pids: pids.to_vec(),
        })
    }

    /// User plus system CPU seconds the processes have used so far (all their threads).
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.pids.iter().map(|&pid| cpu_seconds(pid)).sum()
    }

    /// Resident set size in KiB, summed over the processes.
    pub(crate) fn rss_kib(&self) -> anyhow::Result<u64> {
        self.pids.iter().map(|&pid| rss_kib(pid)).sum()
    }
}

fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / TICKS_PER_SECOND)
        .with_context(|| format!("unexpected format of {path}"))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_rss_kib(&status).with_context(|| format!("no VmRSS in {path}"))
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
        let probe = ServerProbe::of(&[std::process::id()]).unwrap();
        assert!(probe.rss_kib().unwrap() > 0);
        assert!(probe.cpu_seconds().unwrap() >= 0.0);
    }

    #[test]
    fn sums_several_processes() {
        let me = std::process::id();
        let once = ServerProbe::of(&[me]).unwrap().rss_kib().unwrap();
        let twice = ServerProbe::of(&[me, me]).unwrap().rss_kib().unwrap();
        // RSS may move between the reads, but not by a factor of two.
        assert!(twice > once * 3 / 2, "{twice} KiB for two reads of {once}");
        assert!(ServerProbe::of(&[]).is_none());
    }
}
