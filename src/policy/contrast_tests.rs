//! The two Contrast grammars of DESIGN.md section 5, row by row, starting with the seed document's own
//! examples.

use super::*;

/// Every error of a setting, as `entry N ("…"): problem [value]`.
fn errors(direction: Direction, config: &str) -> Vec<String> {
    direction
        .check(config)
        .iter()
        .map(|e| match e.problem.value() {
            Some(v) => format!("{e} [{v}]"),
            None => e.to_string(),
        })
        .collect()
}

const SEED_INGRESS: &str = "web#8080#false##metrics#7890#true";
const SEED_EGRESS: &str =
    "billing#127.137.0.1:8081#billing-svc:8080##cart#127.137.0.2:8081#cart-svc:8080";

#[test]
fn the_seed_examples_are_valid() {
    assert_eq!(
        parse_ingress(SEED_INGRESS),
        Ok(vec![
            IngressEntry {
                name: "web",
                port: 8080,
                disable_tls: false
            },
            IngressEntry {
                name: "metrics",
                port: 7890,
                disable_tls: true
            },
        ])
    );
    assert_eq!(
        parse_egress(SEED_EGRESS),
        Ok(vec![
            EgressEntry {
                name: "billing",
                listen: "127.137.0.1:8081".parse().unwrap(),
                remote_host: RemoteHost::Dns("billing-svc"),
                remote_port: 8080,
            },
            EgressEntry {
                name: "cart",
                listen: "127.137.0.2:8081".parse().unwrap(),
                remote_host: RemoteHost::Dns("cart-svc"),
                remote_port: 8080,
            },
        ])
    );
}

#[test]
fn valid_ingress() {
    let cases: &[(&str, usize)] = &[
        ("", 0),
        ("web#8080#true", 1),
        (SEED_INGRESS, 2),
        ("web#1#true", 1),
        ("web#65535#true", 1),
        // Empty entries are skipped, as Contrast skips them.
        ("web#8080#true##", 1),
        ("##web#8080#true", 1),
        ("####", 0),
        ("##", 0),
        ("web#80#1####api#81#0", 2),
        // The name is informational: anything but '#' goes.
        ("my web (v2)#80#true", 1),
    ];
    for (config, count) in cases {
        let parsed = parse_ingress(config);
        assert_eq!(
            parsed.as_ref().map(Vec::len),
            Ok(*count),
            "{config:?}: {parsed:?}"
        );
    }
}

#[test]
fn every_go_parse_bool_spelling_is_accepted_and_nothing_else() {
    for (text, value) in [
        ("1", true),
        ("t", true),
        ("T", true),
        ("TRUE", true),
        ("true", true),
        ("True", true),
        ("0", false),
        ("f", false),
        ("F", false),
        ("FALSE", false),
        ("false", false),
        ("False", false),
    ] {
        let config = format!("web#80#{text}");
        let parsed = parse_ingress(&config).unwrap_or_else(|e| panic!("{config}: {e:?}"));
        assert_eq!(parsed[0].disable_tls, value, "{config}");
    }
    for bad in ["yes", "no", "tRUE", "on", "", "true "] {
        let config = format!("web#80#{bad}");
        assert_eq!(
            errors(Direction::Ingress, &config),
            [format!(
                "entry 1 ({config:?}): the last field must be true or false (Go ParseBool: 1 t T TRUE true True 0 f F FALSE false False) [{bad}]"
            )],
        );
    }
}

#[test]
fn invalid_ingress() {
    let cases: &[(&str, &[&str])] = &[
        (
            "web#0#true",
            &[r###"entry 1 ("web#0#true"): port must be a port number 1-65535 [0]"###],
        ),
        (
            "web#65536#true",
            &[r###"entry 1 ("web#65536#true"): port must be a port number 1-65535 [65536]"###],
        ),
        (
            "web#+80#true",
            &[
                r###"entry 1 ("web#+80#true"): port must be a port number 1-65535 without a sign [+80]"###,
            ],
        ),
        (
            "web# 80#true",
            &[
                r###"entry 1 ("web# 80#true"): port must be a port number 1-65535 without spaces [ 80]"###,
            ],
        ),
        (
            "web#080#true",
            &[
                r###"entry 1 ("web#080#true"): port must be a port number 1-65535 without leading zeros [080]"###,
            ],
        ),
        (
            "web##true",
            // `##` inside an entry splits it: "web" and "true", each one field.
            &[
                r###"entry 1 ("web"): must be NAME#PORT#BOOL, found 1 field (entries are separated by exactly "##", fields by "#")"###,
                r###"entry 2 ("true"): must be NAME#PORT#BOOL, found 1 field (entries are separated by exactly "##", fields by "#")"###,
            ],
        ),
        (
            "#8080#true",
            &[r###"entry 1 ("#8080#true"): name must not be empty"###],
        ),
        (
            "web#8080",
            &[
                r###"entry 1 ("web#8080"): must be NAME#PORT#BOOL, found 2 fields (entries are separated by exactly "##", fields by "#")"###,
            ],
        ),
        (
            "web#8080#true#x",
            &[
                r###"entry 1 ("web#8080#true#x"): must be NAME#PORT#BOOL, found 4 fields (entries are separated by exactly "##", fields by "#")"###,
            ],
        ),
        (
            "web#80#true##api#0#true",
            &[r###"entry 2 ("api#0#true"): port must be a port number 1-65535 [0]"###],
        ),
        (
            // Every problem of one entry.
            "#0#yes",
            &[
                r###"entry 1 ("#0#yes"): name must not be empty"###,
                r###"entry 1 ("#0#yes"): port must be a port number 1-65535 [0]"###,
                r###"entry 1 ("#0#yes"): the last field must be true or false (Go ParseBool: 1 t T TRUE true True 0 f F FALSE false False) [yes]"###,
            ],
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(errors(Direction::Ingress, config), *expected, "{config:?}");
    }
}

#[test]
fn three_hashes_split_as_contrast_splits_them() {
    // Go's strings.Split cuts "##" from the left: `a###b` is `a` and `#b`.
    assert_eq!(
        errors(Direction::Ingress, "a###b"),
        [
            r###"entry 1 ("a"): must be NAME#PORT#BOOL, found 1 field (entries are separated by exactly "##", fields by "#")"###,
            r###"entry 2 ("#b"): must be NAME#PORT#BOOL, found 2 fields (entries are separated by exactly "##", fields by "#")"###,
        ]
    );
    // A typo'd separator between two good entries is caught, not silently read as something else.
    assert_eq!(
        errors(Direction::Ingress, "web#80#true###api#81#true"),
        [
            r###"entry 2 ("#api#81#true"): must be NAME#PORT#BOOL, found 4 fields (entries are separated by exactly "##", fields by "#")"###
        ]
    );
    // Four hashes are an empty entry between two separators: skipped.
    assert_eq!(
        parse_ingress("web#80#true####api#81#true").map(|e| e.len()),
        Ok(2)
    );
}

#[test]
fn valid_egress() {
    let cases: &[(&str, &[RemoteHost<'static>])] = &[
        ("", &[]),
        (
            SEED_EGRESS,
            &[RemoteHost::Dns("billing-svc"), RemoteHost::Dns("cart-svc")],
        ),
        // The corpus's emojivoto example.
        (
            "emoji#127.137.0.1:8081#emoji-svc:8080##voting#127.137.0.2:8081#voting-svc:8080",
            &[RemoteHost::Dns("emoji-svc"), RemoteHost::Dns("voting-svc")],
        ),
        ("x#127.255.255.255:1#host:65535", &[RemoteHost::Dns("host")]),
        (
            "x#127.0.0.1:80#[::1]:443",
            &[RemoteHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))],
        ),
        (
            "x#127.0.0.1:80#10.0.0.1:443",
            &[RemoteHost::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))],
        ),
        (
            "x#127.0.0.1:80#API.Example.com.:443",
            &[RemoteHost::Dns("API.Example.com.")],
        ),
        (
            "x#127.0.0.1:80#billing.shop.svc.cluster.local:8080##",
            &[RemoteHost::Dns("billing.shop.svc.cluster.local")],
        ),
        // Same IP, different ports: two listeners.
        (
            "a#127.0.0.1:80#a:1##b#127.0.0.1:81#b:1",
            &[RemoteHost::Dns("a"), RemoteHost::Dns("b")],
        ),
    ];
    for (config, hosts) in cases {
        let parsed = parse_egress(config).unwrap_or_else(|e| panic!("{config:?}: {e:?}"));
        let got: Vec<_> = parsed.into_iter().map(|e| e.remote_host).collect();
        assert_eq!(got, *hosts, "{config:?}");
    }
}

#[test]
fn invalid_egress() {
    let cases: &[(&str, &[&str])] = &[
        (
            "x#10.0.0.1:80#svc:80",
            &[
                r###"entry 1 ("x#10.0.0.1:80#svc:80"): listen IP must be an IPv4 address inside 127.0.0.0/8 [10.0.0.1]"###,
            ],
        ),
        (
            "x#128.0.0.1:80#svc:80",
            &[
                r###"entry 1 ("x#128.0.0.1:80#svc:80"): listen IP must be an IPv4 address inside 127.0.0.0/8 [128.0.0.1]"###,
            ],
        ),
        (
            "x#localhost:80#svc:80",
            &[
                r###"entry 1 ("x#localhost:80#svc:80"): listen IP must be an IPv4 address inside 127.0.0.0/8 [localhost]"###,
            ],
        ),
        (
            "x#[::1]:80#svc:80",
            &[
                r###"entry 1 ("x#[::1]:80#svc:80"): listen IP must be an IPv4 address inside 127.0.0.0/8 [[::1]]"###,
            ],
        ),
        (
            "x#127.0.0.1#svc:80",
            &[r###"entry 1 ("x#127.0.0.1#svc:80"): listen address must be IP:PORT [127.0.0.1]"###],
        ),
        (
            "x#127.0.0.1:0#svc:80",
            &[
                r###"entry 1 ("x#127.0.0.1:0#svc:80"): listen port must be a port number 1-65535 [0]"###,
            ],
        ),
        (
            "x#127.0.0.1:65536#svc:80",
            &[
                r###"entry 1 ("x#127.0.0.1:65536#svc:80"): listen port must be a port number 1-65535 [65536]"###,
            ],
        ),
        (
            "x#127.0.0.1:80#svc:65536",
            &[
                r###"entry 1 ("x#127.0.0.1:80#svc:65536"): remote port must be a port number 1-65535 [65536]"###,
            ],
        ),
        (
            "x#127.0.0.1:80#::1:443",
            &[
                r###"entry 1 ("x#127.0.0.1:80#::1:443"): an IPv6 remote host must be in brackets, e.g. [::1]:443 [::1:443]"###,
            ],
        ),
        (
            "x#127.0.0.1:80#svc",
            &[r###"entry 1 ("x#127.0.0.1:80#svc"): remote address must be HOST:PORT [svc]"###],
        ),
        (
            "x#127.0.0.1:80#[::1]",
            &[r###"entry 1 ("x#127.0.0.1:80#[::1]"): remote address must be HOST:PORT [[::1]]"###],
        ),
        (
            "x#127.0.0.1:80#[svc]:80",
            &[
                r###"entry 1 ("x#127.0.0.1:80#[svc]:80"): remote host in brackets must be an IPv6 address [svc]"###,
            ],
        ),
        (
            "x#127.0.0.1:80#:80",
            &[r###"entry 1 ("x#127.0.0.1:80#:80"): remote host must not be empty []"###],
        ),
        (
            "x#127.0.0.1:80#billing_svc:80",
            &[
                r###"entry 1 ("x#127.0.0.1:80#billing_svc:80"): remote host must be a DNS name or an IP address: label 1 must contain only a-z, 0-9 and '-', not '_' [billing_svc]"###,
            ],
        ),
        (
            "x#127.0.0.1:80#10.0.0.256:80",
            &[
                r###"entry 1 ("x#127.0.0.1:80#10.0.0.256:80"): remote host is neither a valid IPv4 address nor a DNS name [10.0.0.256]"###,
            ],
        ),
        (
            "#127.0.0.1:80#svc:80",
            &[r###"entry 1 ("#127.0.0.1:80#svc:80"): name must not be empty"###],
        ),
        (
            "x#127.0.0.1:80",
            &[
                r###"entry 1 ("x#127.0.0.1:80"): must be NAME#LISTEN_IP:LISTEN_PORT#REMOTE_HOST:REMOTE_PORT, found 2 fields (entries are separated by exactly "##", fields by "#")"###,
            ],
        ),
        (
            // Every problem of one entry.
            "x#10.0.0.1:0#svc:0",
            &[
                r###"entry 1 ("x#10.0.0.1:0#svc:0"): listen IP must be an IPv4 address inside 127.0.0.0/8 [10.0.0.1]"###,
                r###"entry 1 ("x#10.0.0.1:0#svc:0"): listen port must be a port number 1-65535 [0]"###,
                r###"entry 1 ("x#10.0.0.1:0#svc:0"): remote port must be a port number 1-65535 [0]"###,
            ],
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(errors(Direction::Egress, config), *expected, "{config:?}");
    }
}

#[test]
fn two_entries_may_not_listen_on_one_address() {
    assert_eq!(
        errors(
            Direction::Egress,
            "a#127.0.0.1:80#a:1##b#127.0.0.2:80#b:1##c#127.0.0.1:80#c:1"
        ),
        [r###"entry 3 ("c#127.0.0.1:80#c:1"): listens on 127.0.0.1:80 like entry 1"###]
    );
}

#[test]
fn settings_are_recognised_by_name() {
    assert_eq!(
        Direction::of_env_var("EDG_INGRESS_PROXY_CONFIG"),
        Some(Direction::Ingress)
    );
    assert_eq!(
        Direction::of_env_var("CONTRAST_INGRESS_PROXY_CONFIG"),
        Some(Direction::Ingress)
    );
    assert_eq!(
        Direction::of_env_var("EDG_EGRESS_PROXY_CONFIG"),
        Some(Direction::Egress)
    );
    assert_eq!(
        Direction::of_env_var("CONTRAST_EGRESS_PROXY_CONFIG"),
        Some(Direction::Egress)
    );
    assert_eq!(Direction::of_env_var("EDG_PROXY_CONFIG"), None);
    assert_eq!(
        Direction::of_annotation("contrast.edgeless.systems/servicemesh-egress"),
        Some(Direction::Egress)
    );
}
