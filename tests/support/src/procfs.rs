//! What `/proc` says about a process the tests started: CPU time, memory, open files; and the
//! machine's load, to tell a quiet machine from a busy one in benchmark results.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat`'s times.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap_or_else(|e| panic!("running getconf CLK_TCK: {e}"));
        let text = String::from_utf8_lossy(&output.stdout);
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or_else(|| panic!("getconf CLK_TCK printed {text:?}"))
    })
}

/// User plus system CPU time of process `pid` and all its threads so far (`utime` + `stime`).
pub fn cpu_time(pid: u32) -> Duration {
    try_cpu_time(pid).unwrap_or_else(|e| panic!("{e}"))
}

/// [`cpu_time`], or why `/proc/PID/stat` could not be read (the process is gone, say).
pub fn try_cpu_time(pid: u32) -> Result<Duration, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: fields count from after it.
    let rest = stat
        .rfind(')')
        .map(|end| &stat[end + 1..])
        .ok_or_else(|| format!("{path} has no command name: {stat}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; `rest` starts at field 3.
    let mut ticks = 0;
    for i in [11, 12] {
        ticks += fields
            .get(i)
            .and_then(|field| field.parse::<u64>().ok())
            .ok_or_else(|| format!("{path}: field {} is not a number: {stat}", i + 3))?;
    }
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB; `None` when unreadable.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How many file descriptors `pid` has open; `None` when unreadable.
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The one-minute load average, to tell a quiet machine from a busy one in the results.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// The peers of the established TCP connections whose local end is `local` (an IPv4 address), from
/// `/proc/net/tcp`: the connections a server on this machine has accepted, as it sees them.
pub fn tcp_peers(local: SocketAddrV4) -> Vec<SocketAddr> {
    // Addresses are the u32 of the address in host (little-endian) order, then the port, in hex.
    let hex = |addr: &SocketAddrV4| {
        let ip = u32::from_le_bytes(addr.ip().octets());
        format!("{ip:08X}:{:04X}", addr.port())
    };
    let parse = |text: &str| {
        let (ip, port) = text.split_once(':')?;
        let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_le_bytes());
        Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
    };
    let local = hex(&local);
    let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let established = fields.get(3) == Some(&"01");
            (established && fields.get(1) == Some(&local.as_str()))
                .then(|| parse(fields.get(2)?))
                .flatten()
        })
        .collect()
}
