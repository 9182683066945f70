//! Contrast's service-mesh proxy grammars (`policy::contrast`), ingress and egress on the same text.
//!
//! Checked against an independent reading of DESIGN.md section 5, not only "does not panic":
//! - entries are the non-empty pieces of `split("##")`; a parse succeeds iff every entry is valid (and,
//!   for egress, no two entries listen on the same IP:port), and the entries reported as wrong are
//!   exactly the invalid ones (plus, for egress, ones repeating an earlier listen address);
//! - every parsed entry re-validates: name non-empty without `#`, ports 1-65535 written canonically,
//!   listen IP in 127.0.0.0/8, listen addresses unique, bool a Go `ParseBool` spelling;
//! - writing the parsed entries back out and parsing again gives the same entries;
//! - `Direction::check` agrees with the parsers, and a Pod carrying the text as annotation and env var
//!   is denied with exactly one finding per grammar error, never a warning.
#![no_main]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};

use fuzz_support::port_ok;
use libfuzzer_sys::fuzz_target;
use mesh_admission::policy::contrast::{
    Direction, EgressEntry, IngressEntry, RemoteHost, parse_egress, parse_ingress,
};
use mesh_admission::config::Config;
use mesh_admission::policy::validate;

/// The entries as Contrast splits them.
fn entries(config: &str) -> Vec<&str> {
    config.split("##").filter(|e| !e.is_empty()).collect()
}

const GO_BOOLS: [&str; 12] = [
    "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
];

fn ingress_ok(entry: &str) -> bool {
    let fields: Vec<&str> = entry.split('#').collect();
    matches!(fields.as_slice(), [name, port, b]
        if !name.is_empty() && port_ok(port).is_some() && GO_BOOLS.contains(b))
}

fn dns_ok(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let labels_ok = labels.iter().all(|l| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    let tld_numeric = labels
        .last()
        .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !tld_numeric
}

/// The listen address of an entry with three fields, when that field is valid.
fn listen_part(entry: &str) -> Option<SocketAddrV4> {
    let fields: Vec<&str> = entry.split('#').collect();
    let [_, listen, _] = fields.as_slice() else {
        return None;
    };
    let (ip, port) = listen.rsplit_once(':')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    if ip.octets()[0] != 127 {
        return None;
    }
    Some(SocketAddrV4::new(ip, port_ok(port)?))
}

/// The listen address of a valid egress entry.
fn egress_ok(entry: &str) -> Option<SocketAddrV4> {
    let fields: Vec<&str> = entry.split('#').collect();
    let [name, _, remote] = fields.as_slice() else {
        return None;
    };
    if name.is_empty() {
        return None;
    }
    let listen = listen_part(entry)?;
    let host_ok = if let Some(rest) = remote.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        port_ok(after.strip_prefix(':')?)?;
        inside.parse::<Ipv6Addr>().is_ok()
    } else {
        let (host, port) = remote.rsplit_once(':')?;
        port_ok(port)?;
        !host.contains(':') && (host.parse::<Ipv4Addr>().is_ok() || dns_ok(host))
    };
    host_ok.then_some(listen)
}

fn write_ingress(entries: &[IngressEntry<'_>]) -> String {
    entries
        .iter()
        .map(|e| format!("{}#{}#{}", e.name, e.port, e.disable_tls))
        .collect::<Vec<_>>()
        .join("##")
}

fn write_egress(entries: &[EgressEntry<'_>]) -> String {
    entries
        .iter()
        .map(|e| {
            let host = match &e.remote_host {
                RemoteHost::Dns(name) => (*name).to_owned(),
                RemoteHost::Ip(IpAddr::V4(ip)) => ip.to_string(),
                RemoteHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            };
            format!("{}#{}#{host}:{}", e.name, e.listen, e.remote_port)
        })
        .collect::<Vec<_>>()
        .join("##")
}

fn check_ingress(config: &str) -> usize {
    let pieces = entries(config);
    let invalid: BTreeSet<usize> = (1..=pieces.len())
        .filter(|&i| !ingress_ok(pieces[i - 1]))
        .collect();
    let result = parse_ingress(config);
    assert_eq!(
        Direction::Ingress.check(config).is_empty(),
        result.is_ok(),
        "check and parse disagree: {config:?}"
    );
    match result {
        Ok(parsed) => {
            assert!(
                invalid.is_empty(),
                "ingress accepted invalid entries {invalid:?}: {config:?}"
            );
            assert_eq!(
                parsed.len(),
                pieces.len(),
                "ingress entry count: {config:?}"
            );
            for (e, text) in parsed.iter().zip(&pieces) {
                let fields: Vec<&str> = text.split('#').collect();
                assert_eq!(fields.len(), 3, "{text:?}");
                assert_eq!(e.name, fields[0], "name of {text:?}");
                assert!(
                    !e.name.is_empty() && !e.name.contains('#'),
                    "name of {text:?}"
                );
                assert!(e.port >= 1, "port 0 accepted in {text:?}");
                assert_eq!(e.port.to_string(), fields[1], "port of {text:?}");
                let truthy = ["1", "t", "T", "TRUE", "true", "True"].contains(&fields[2]);
                assert_eq!(e.disable_tls, truthy, "bool of {text:?}");
            }
            let written = write_ingress(&parsed);
            let again = parse_ingress(&written)
                .unwrap_or_else(|e| panic!("written ingress {written:?} does not parse: {e:?}"));
            assert_eq!(again, parsed, "ingress round trip via {written:?}");
            0
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "Err with no error: {config:?}");
            let reported: BTreeSet<usize> = errors.iter().map(|e| e.entry).collect();
            for e in &errors {
                assert!(
                    (1..=pieces.len()).contains(&e.entry) && e.text == pieces[e.entry - 1],
                    "error {e:?} names no entry of {config:?}"
                );
                let _ = e.to_string();
            }
            assert_eq!(
                reported, invalid,
                "ingress errors vs invalid entries: {config:?}"
            );
            errors.len()
        }
    }
}

fn check_egress(config: &str) -> usize {
    let pieces = entries(config);
    let listens: Vec<Option<SocketAddrV4>> = pieces.iter().map(|p| egress_ok(p)).collect();
    let invalid: BTreeSet<usize> = (1..=pieces.len())
        .filter(|&i| listens[i - 1].is_none())
        .collect();
    let distinct: BTreeSet<SocketAddrV4> = listens.iter().flatten().copied().collect();
    let all_ok = invalid.is_empty() && distinct.len() == pieces.len();
    let result = parse_egress(config);
    assert_eq!(
        Direction::Egress.check(config).is_empty(),
        result.is_ok(),
        "check and parse disagree: {config:?}"
    );
    match result {
        Ok(parsed) => {
            assert!(
                all_ok,
                "egress accepted {config:?} (invalid entries {invalid:?})"
            );
            assert_eq!(parsed.len(), pieces.len(), "egress entry count: {config:?}");
            let mut seen = BTreeSet::new();
            for (i, (e, text)) in parsed.iter().zip(&pieces).enumerate() {
                assert!(
                    !e.name.is_empty() && !e.name.contains('#'),
                    "name of {text:?}"
                );
                assert_eq!(e.listen.ip().octets()[0], 127, "listen IP of {text:?}");
                assert!(
                    e.listen.port() >= 1 && e.remote_port >= 1,
                    "port 0 in {text:?}"
                );
                assert!(
                    seen.insert(e.listen),
                    "duplicate listen accepted: {config:?}"
                );
                assert_eq!(Some(e.listen), listens[i], "listen of {text:?}");
                if let RemoteHost::Dns(name) = e.remote_host {
                    assert!(dns_ok(name), "remote host {name:?} of {text:?}");
                }
            }
            let written = write_egress(&parsed);
            let again = parse_egress(&written)
                .unwrap_or_else(|e| panic!("written egress {written:?} does not parse: {e:?}"));
            assert_eq!(again, parsed, "egress round trip via {written:?}");
            0
        }
        Err(errors) => {
            assert!(!all_ok, "egress refused valid {config:?}: {errors:?}");
            let reported: BTreeSet<usize> = errors.iter().map(|e| e.entry).collect();
            for e in &errors {
                assert!(
                    (1..=pieces.len()).contains(&e.entry) && e.text == pieces[e.entry - 1],
                    "error {e:?} names no entry of {config:?}"
                );
                let _ = e.to_string();
            }
            assert!(
                invalid.is_subset(&reported),
                "invalid egress entries {invalid:?} not all reported ({reported:?}): {config:?}"
            );
            for &n in reported.difference(&invalid) {
                let listen = listen_part(pieces[n - 1]);
                assert!(
                    pieces[..n - 1].iter().any(|p| listen_part(p) == listen),
                    "valid egress entry {n} reported without a duplicate listen: {config:?} {errors:?}"
                );
            }
            errors.len()
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let config = String::from_utf8_lossy(data);
    let ingress_errors = check_ingress(&config);
    let egress_errors = check_egress(&config);

    // The same text where users put it: the pod annotation (ingress) and a sidecar env var (egress).
    let pod = serde_json::json!({
        "metadata": {"annotations": {"contrast.edgeless.systems/servicemesh-ingress": &*config}},
        "spec": {"initContainers": [{"name": "sidecar", "restartPolicy": "Always",
                 "env": [{"name": "EDG_EGRESS_PROXY_CONFIG", "value": &*config}]}]}
    })
    .to_string();
    let findings = validate::validate("", "Pod", &pod, &Config::default()).expect("the pod decodes");
    assert!(
        findings.iter().all(|f| f.is_error()),
        "warning from a Contrast setting: {findings:?}"
    );
    assert_eq!(
        findings.len(),
        ingress_errors + egress_errors,
        "findings vs grammar errors for {config:?}: {findings:?}"
    );
});
