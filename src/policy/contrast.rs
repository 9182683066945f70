//! Contrast's service-mesh proxy settings (DESIGN.md section 5, `seeds/contrast-service-mesh.md`).
//!
//! - ingress: `NAME#PORT#BOOL` entries joined by `##`; BOOL `true` turns TLS termination off on that port,
//!   `false` keeps TLS but stops requiring a client certificate.
//! - egress: `NAME#LISTEN_IP:LISTEN_PORT#REMOTE_HOST:REMOTE_PORT` entries joined by `##`; the workload
//!   connects to LISTEN (inside 127.0.0.0/8) and Envoy carries the traffic over mTLS to REMOTE.
//!
//! Splitting is done exactly as Contrast's Go parser does it (`strings.Split(config, "##")`, then
//! `strings.Split(entry, "#")`): entries are cut at each `##` from the left, without overlap. So `a###b` is
//! the two entries `a` and `#b`, and `web#80#true###api#81#true` is `web#80#true` and `#api#81#true` —
//! both malformed, and reported as such. An empty value and empty entries (`a##`, `####`) are skipped, as
//! Contrast skips them. Entries are numbered from 1 among the entries that are read, skipped ones not
//! counted; every message also quotes the entry, so a count is never the only clue.
//!
//! Where Contrast is lax we refuse: ports outside 1-65535 (Contrast wraps them silently into a `uint16`),
//! signs and leading zeros (Go's `Atoi` takes `+80` and `080`), empty names (they become Envoy listener
//! and cluster names), and two egress entries on one listen address (Envoy cannot bind both).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};

use super::syntax::{LabelKind, MAX_NAME_CHARS, PortError, check_label, parse_go_bool, parse_port};

/// Env vars of the service-mesh sidecar carrying the ingress grammar (old and new spelling).
pub const INGRESS_ENV_VARS: [&str; 2] =
    ["EDG_INGRESS_PROXY_CONFIG", "CONTRAST_INGRESS_PROXY_CONFIG"];
/// Env vars of the service-mesh sidecar carrying the egress grammar.
pub const EGRESS_ENV_VARS: [&str; 2] = ["EDG_EGRESS_PROXY_CONFIG", "CONTRAST_EGRESS_PROXY_CONFIG"];
/// Pod annotation `contrast generate` turns into the ingress setting.
pub const INGRESS_ANNOTATION: &str = "contrast.edgeless.systems/servicemesh-ingress";
/// Pod annotation `contrast generate` turns into the egress setting.
pub const EGRESS_ANNOTATION: &str = "contrast.edgeless.systems/servicemesh-egress";

/// Which of the two grammars a setting uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The grammar of an env var, if it is one of the proxy settings.
    pub fn of_env_var(name: &str) -> Option<Self> {
        if INGRESS_ENV_VARS.contains(&name) {
            Some(Direction::Ingress)
        } else if EGRESS_ENV_VARS.contains(&name) {
            Some(Direction::Egress)
        } else {
            None
        }
    }

    /// The grammar of a pod annotation, if it is one of the proxy settings.
    pub fn of_annotation(key: &str) -> Option<Self> {
        match key {
            INGRESS_ANNOTATION => Some(Direction::Ingress),
            EGRESS_ANNOTATION => Some(Direction::Egress),
            _ => None,
        }
    }

    /// Checks `config` against this grammar, keeping only the errors.
    pub fn check(self, config: &str) -> Vec<EntryError> {
        match self {
            Direction::Ingress => parse_ingress(config).err(),
            Direction::Egress => parse_egress(config).err(),
        }
        .unwrap_or_default()
    }
}

/// One ingress entry: traffic to `port` is not mTLS-terminated the default way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressEntry<'a> {
    /// Informational only.
    pub name: &'a str,
    pub port: u16,
    /// `true`: no TLS at all on the port; `false`: TLS, but no client certificate required.
    pub disable_tls: bool,
}

/// Where an egress entry sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteHost<'a> {
    Dns(&'a str),
    Ip(IpAddr),
}

/// One egress entry: connections to `listen` are carried over mTLS to `remote_host:remote_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressEntry<'a> {
    /// Becomes the Envoy listener and cluster name.
    pub name: &'a str,
    pub listen: SocketAddrV4,
    pub remote_host: RemoteHost<'a>,
    pub remote_port: u16,
}

/// What is wrong with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not the right number of `#`-separated fields.
    Shape {
        expected: &'static str,
        fields: usize,
    },
    EmptyName,
    Port {
        which: &'static str,
        value: String,
        error: PortError,
    },
    Bool {
        value: String,
    },
    /// The listen part is not `IP:PORT`.
    ListenAddress {
        value: String,
    },
    /// The listen IP is not an IPv4 address in 127.0.0.0/8.
    ListenIp {
        value: String,
    },
    /// The remote part is not `HOST:PORT`.
    RemoteAddress {
        value: String,
    },
    RemoteIpv6Unbracketed {
        value: String,
    },
    RemoteHost {
        value: String,
        why: String,
    },
    DuplicateListen {
        listen: SocketAddrV4,
        first_entry: usize,
    },
}

impl Problem {
    /// The part of the entry at fault, shown as the finding's value.
    pub fn value(&self) -> Option<&str> {
        match self {
            Problem::Shape { .. } | Problem::EmptyName | Problem::DuplicateListen { .. } => None,
            Problem::Port { value, .. }
            | Problem::Bool { value }
            | Problem::ListenAddress { value }
            | Problem::ListenIp { value }
            | Problem::RemoteAddress { value }
            | Problem::RemoteIpv6Unbracketed { value }
            | Problem::RemoteHost { value, .. } => Some(value),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Shape { expected, fields } => write!(
                f,
                "must be {expected}, found {fields} field{} (entries are separated by exactly \"##\", fields by \"#\")",
                if *fields == 1 { "" } else { "s" }
            ),
            Problem::EmptyName => f.write_str("name must not be empty"),
            Problem::Port { which, error, .. } => write!(f, "{which} {error}"),
            Problem::Bool { .. } => f.write_str(
                "the last field must be true or false (Go ParseBool: 1 t T TRUE true True 0 f F FALSE false False)",
            ),
            Problem::ListenAddress { .. } => f.write_str("listen address must be IP:PORT"),
            Problem::ListenIp { .. } => {
                f.write_str("listen IP must be an IPv4 address inside 127.0.0.0/8")
            }
            Problem::RemoteAddress { .. } => f.write_str("remote address must be HOST:PORT"),
            Problem::RemoteIpv6Unbracketed { .. } => {
                f.write_str("an IPv6 remote host must be in brackets, e.g. [::1]:443")
            }
            Problem::RemoteHost { why, .. } => write!(f, "remote host {why}"),
            Problem::DuplicateListen {
                listen,
                first_entry,
            } => write!(f, "listens on {listen} like entry {first_entry}"),
        }
    }
}

/// A problem in one entry of a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// 1-based, among the non-empty entries.
    pub entry: usize,
    /// The entry as written.
    pub text: String,
    pub problem: Problem,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "entry {} ({:?}): {}",
            self.entry, self.text, self.problem
        )
    }
}

/// The non-empty entries of a setting, numbered from 1, split as Contrast splits them.
fn entries(config: &str) -> impl Iterator<Item = (usize, &str)> {
    config
        .split("##")
        .filter(|e| !e.is_empty())
        .enumerate()
        .map(|(i, e)| (i + 1, e))
}

/// Splits an entry into exactly three `#`-separated fields.
fn three_fields<'a>(entry: &'a str, expected: &'static str) -> Result<[&'a str; 3], Problem> {
    let fields: Vec<&str> = entry.split('#').collect();
    match fields.as_slice() {
        [a, b, c] => Ok([a, b, c]),
        _ => Err(Problem::Shape {
            expected,
            fields: fields.len(),
        }),
    }
}

fn port(which: &'static str, value: &str) -> Result<u16, Problem> {
    parse_port(value).map_err(|error| Problem::Port {
        which,
        value: value.to_owned(),
        error,
    })
}

/// Reads every entry with `read`, which records each problem it finds; the entries if there were none.
fn parse_entries<'a, T>(
    config: &'a str,
    mut read: impl FnMut(usize, &'a str, &mut Vec<Problem>) -> Option<T>,
) -> Result<Vec<T>, Vec<EntryError>> {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for (number, text) in entries(config) {
        let mut problems = Vec::new();
        match read(number, text, &mut problems) {
            Some(entry) if problems.is_empty() => parsed.push(entry),
            _ => errors.extend(problems.into_iter().map(|problem| EntryError {
                entry: number,
                text: text.to_owned(),
                problem,
            })),
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

/// Parses an ingress setting: every entry, or every problem in every entry.
pub fn parse_ingress(config: &str) -> Result<Vec<IngressEntry<'_>>, Vec<EntryError>> {
    parse_entries(config, |_, text, problems| ingress_entry(text, problems))
}

fn ingress_entry<'a>(text: &'a str, problems: &mut Vec<Problem>) -> Option<IngressEntry<'a>> {
    let [name, port_text, bool_text] = three_fields(text, "NAME#PORT#BOOL")
        .map_err(|p| problems.push(p))
        .ok()?;
    if name.is_empty() {
        problems.push(Problem::EmptyName);
    }
    let port = port("port", port_text).map_err(|p| problems.push(p)).ok();
    let disable_tls = parse_go_bool(bool_text);
    if disable_tls.is_none() {
        problems.push(Problem::Bool {
            value: bool_text.to_owned(),
        });
    }
    Some(IngressEntry {
        name,
        port: port?,
        disable_tls: disable_tls?,
    })
}

/// Parses an egress setting: every entry, or every problem in every entry (including two entries on one
/// listen address).
pub fn parse_egress(config: &str) -> Result<Vec<EgressEntry<'_>>, Vec<EntryError>> {
    let mut listeners: BTreeMap<SocketAddrV4, usize> = BTreeMap::new();
    parse_entries(config, |number, text, problems| {
        let entry = egress_entry(text, problems)?;
        if let Some(&first_entry) = listeners.get(&entry.listen) {
            problems.push(Problem::DuplicateListen {
                listen: entry.listen,
                first_entry,
            });
        } else {
            listeners.insert(entry.listen, number);
        }
        Some(entry)
    })
}

fn egress_entry<'a>(text: &'a str, problems: &mut Vec<Problem>) -> Option<EgressEntry<'a>> {
    let [name, listen_text, remote_text] =
        three_fields(text, "NAME#LISTEN_IP:LISTEN_PORT#REMOTE_HOST:REMOTE_PORT")
            .map_err(|p| problems.push(p))
            .ok()?;
    if name.is_empty() {
        problems.push(Problem::EmptyName);
    }
    let listen = listen_address(listen_text, problems);
    let remote = remote_address(remote_text, problems);
    let (remote_host, remote_port) = remote?;
    Some(EgressEntry {
        name,
        listen: listen?,
        remote_host,
        remote_port,
    })
}

fn listen_address(text: &str, problems: &mut Vec<Problem>) -> Option<SocketAddrV4> {
    let Some((ip_text, port_text)) = text.rsplit_once(':') else {
        problems.push(Problem::ListenAddress {
            value: text.to_owned(),
        });
        return None;
    };
    let ip = match ip_text.parse::<Ipv4Addr>() {
        // Only the pod's own loopback network (127.0.0.0/8) is redirected to Envoy.
        Ok(ip) if ip.is_loopback() => Some(ip),
        _ => {
            problems.push(Problem::ListenIp {
                value: ip_text.to_owned(),
            });
            None
        }
    };
    let port = port("listen port", port_text)
        .map_err(|p| problems.push(p))
        .ok();
    Some(SocketAddrV4::new(ip?, port?))
}

/// `HOST:PORT` or `[IPv6]:PORT`, as Go's `net.SplitHostPort` reads it.
fn remote_address<'a>(text: &'a str, problems: &mut Vec<Problem>) -> Option<(RemoteHost<'a>, u16)> {
    let malformed = |problems: &mut Vec<Problem>| {
        problems.push(Problem::RemoteAddress {
            value: text.to_owned(),
        });
        None
    };
    let (host, port_text) = if let Some(bracketed) = text.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return malformed(problems);
        };
        let Some(port_text) = after.strip_prefix(':') else {
            return malformed(problems);
        };
        let host = match inside.parse::<Ipv6Addr>() {
            Ok(ip) => Some(RemoteHost::Ip(IpAddr::V6(ip))),
            Err(_) => {
                problems.push(Problem::RemoteHost {
                    value: inside.to_owned(),
                    why: "in brackets must be an IPv6 address".into(),
                });
                None
            }
        };
        (host, port_text)
    } else {
        let Some((host_text, port_text)) = text.rsplit_once(':') else {
            return malformed(problems);
        };
        if host_text.contains(':') {
            problems.push(Problem::RemoteIpv6Unbracketed {
                value: text.to_owned(),
            });
            return None;
        }
        let host = remote_host(host_text)
            .map_err(|why| {
                problems.push(Problem::RemoteHost {
                    value: host_text.to_owned(),
                    why,
                })
            })
            .ok();
        (host, port_text)
    };
    let port = port("remote port", port_text)
        .map_err(|p| problems.push(p))
        .ok();
    Some((host?, port?))
}

/// An IPv4 address or a DNS name. Upper case is accepted here (DNS ignores case and the name may be
/// outside the cluster), a trailing dot (an absolute name) too.
fn remote_host(text: &str) -> Result<RemoteHost<'_>, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(RemoteHost::Ip(IpAddr::V4(ip)));
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "is {chars} characters long, at most {MAX_NAME_CHARS} are allowed"
        ));
    }
    let lower = name.to_ascii_lowercase();
    for (i, label) in lower.split('.').enumerate() {
        check_label(label, LabelKind::Rfc1123)
            .map_err(|e| format!("must be a DNS name or an IP address: label {} {e}", i + 1))?;
    }
    // No top-level domain is all digits: such a name is a mistyped IPv4 address (`10.0.0.256`).
    if lower
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("is neither a valid IPv4 address nor a DNS name".into());
    }
    Ok(RemoteHost::Dns(text))
}

#[cfg(test)]
#[path = "contrast_tests.rs"]
mod tests;
