//! Process CPU accounting from `/proc`: `utime + stime` of a process (all
//! its threads) from `/proc/<pid>/stat`, and finding the process that
//! listens on a loopback TCP port (`/proc/net/tcp{,6}` socket inode, then
//! `/proc/*/fd`).
//!
//! The parsers are pure functions over the file contents and are unit-tested.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};

/// CPU time of a process, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTicks {
    /// User-mode ticks (field 14 of `/proc/<pid>/stat`).
    pub utime: u64,
    /// Kernel-mode ticks (field 15).
    pub stime: u64,
}

impl CpuTicks {
    /// utime + stime.
    pub fn total(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }
}

/// Parses the contents of `/proc/<pid>/stat`. The command name (field 2) is
/// in parentheses and may itself contain spaces and parentheses, so fields
/// are counted from the *last* `)`.
pub fn parse_stat(contents: &str) -> Result<CpuTicks> {
    let close = contents.rfind(')').ok_or_else(|| anyhow!("malformed /proc stat: no `)`"))?;
    // After ") " come fields 3 (state), 4 (ppid), ... ; utime is field 14,
    // i.e. index 11 counting from field 3.
    let rest: Vec<&str> = contents[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        let s = rest
            .get(n - 3)
            .ok_or_else(|| anyhow!("malformed /proc stat: only {} fields after the name", rest.len()))?;
        s.parse::<u64>()
            .map_err(|_| anyhow!("malformed /proc stat: field {n} is `{s}`"))
    };
    Ok(CpuTicks { utime: field(14)?, stime: field(15)? })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, normally 100).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU ticks of process `pid` now.
pub fn read_cpu(pid: u32) -> Result<CpuTicks> {
    let path = format!("/proc/{pid}/stat");
    let s = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_stat(&s)
}

/// CPU seconds between two samples.
pub fn cpu_seconds(before: CpuTicks, after: CpuTicks) -> f64 {
    after.total().saturating_sub(before.total()) as f64 / ticks_per_second() as f64
}

/// Socket inodes in LISTEN state bound to `port` in a `/proc/net/tcp` or
/// `/proc/net/tcp6` table.
pub fn parse_listen_inodes(table: &str, port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        if f.len() < 10 {
            continue;
        }
        let Some((_, port_hex)) = f[1].rsplit_once(':') else { continue };
        let Ok(p) = u16::from_str_radix(port_hex, 16) else { continue };
        if p != port || f[3] != "0A" {
            continue;
        }
        if let Ok(inode) = f[9].parse::<u64>() {
            if inode != 0 {
                out.push(inode);
            }
        }
    }
    out
}

/// The process listening on TCP `port` (any address), found through `/proc`.
/// Needs permission to read other processes' fd tables (same user or root).
pub fn find_listener_pid(port: u16) -> Result<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(s) = std::fs::read_to_string(table) {
            inodes.extend(parse_listen_inodes(&s, port));
        }
    }
    if inodes.is_empty() {
        bail!("no process listens on port {port}");
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("read /proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if process_has_fd(&entry.path().join("fd"), &wanted) {
            found.push(pid);
        }
    }
    found.sort_unstable();
    // Several listeners on one port (SO_REUSEPORT) are threads of one broker
    // process in every case we start; take the lowest pid if not.
    found
        .first()
        .copied()
        .ok_or_else(|| anyhow!("port {port} is listened on, but its process is not visible in /proc"))
}

fn process_has_fd(fd_dir: &Path, wanted: &[String]) -> bool {
    let Ok(rd) = std::fs::read_dir(fd_dir) else { return false };
    rd.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|t| t.to_str().map(|s| wanted.iter().any(|w| w == s)))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_stat_line() {
        let s = "1234 (corestream) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 3 0 100 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_stat(s).unwrap(), CpuTicks { utime: 250, stime: 75 });
        assert_eq!(parse_stat(s).unwrap().total(), 325);
    }

    #[test]
    fn names_with_spaces_and_parens() {
        let s = "77 (a) b (c d)) R 1 77 77 0 -1 0 0 0 0 0 9 8 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(s).unwrap(), CpuTicks { utime: 9, stime: 8 });
    }

    #[test]
    fn malformed_stat_is_an_error() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("1 (x) S 1 2").is_err());
        assert!(parse_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 8").is_err());
    }

    #[test]
    fn own_process_is_readable_and_monotonic() {
        let pid = std::process::id();
        let a = read_cpu(pid).unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = read_cpu(pid).unwrap();
        assert!(b.total() >= a.total());
        assert!(cpu_seconds(a, b) >= 0.0);
        assert!(ticks_per_second() > 0);
    }

    #[test]
    fn listen_table_parsing() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:2384 0100007F:D2C4 01 00000000:00000000 00:00000000 00000000     0        0 6666 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7777 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(parse_listen_inodes(t, 0x2384), vec![5555]);
        assert_eq!(parse_listen_inodes(t, 22), vec![7777]);
        assert!(parse_listen_inodes(t, 80).is_empty());
        assert!(parse_listen_inodes("garbage\nmore garbage", 80).is_empty());
    }

    #[test]
    fn finds_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(find_listener_pid(port).unwrap(), std::process::id());
        drop(l);
    }
}
