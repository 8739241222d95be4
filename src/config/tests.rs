//! Config parsing and validation: every example file, each validation error names its key,
//! and unknown keys are rejected everywhere.

use std::path::Path;

use super::*;

const DEV_CONFIG: &str = include_str!("../../config/dev.toml");

const MINIMAL: &str = r#"
[server]
realm = "r.example"
listen = ["udp://127.0.0.1:3478"]
[auth]
secret_file = "secret"
[relay]
addresses = ["127.0.0.1"]
[geo]
country_db = "country.mmdb"
"#;

fn parse(text: &str) -> Result<Config, Error> {
    Config::parse(text, Path::new("/etc/eeaturn"))
}

/// The key an error names: an [`Error::Invalid`] carries it; a schema error (a value of the
/// wrong type or spelling, caught while deserializing) starts with "config key `KEY`:".
fn invalid_key(text: &str) -> String {
    match parse(text) {
        Err(Error::Invalid { key, .. }) => key.to_owned(),
        Err(Error::Parse(m)) => {
            let rest = m
                .strip_prefix("config key `")
                .unwrap_or_else(|| panic!("a parse error that names no key: {m}"));
            rest[..rest.find('`').unwrap()].to_owned()
        }
        other => panic!("expected an error naming a key, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.realm, "r.example");
    assert_eq!(c.secret_file, Path::new("/etc/eeaturn/secret"));
    assert_eq!(c.relay.ports, 49152..=65535);
    assert_eq!(c.limits.default_lifetime, Duration::from_secs(600));
    assert_eq!(c.limits.max_lifetime, Duration::from_secs(3600));
    assert_eq!(c.max_credential_ttl, Duration::from_secs(86400));
    assert_eq!(c.software.as_deref(), Some("eeaturn"));
    assert!(c.rules.peer_dangerous_allow.is_empty());
    assert_eq!(c.rules.regions, vec!["eea".to_owned()]);
    assert!(!c.rules.unknown_allowed);
    assert!(!c.log.log_ips);
}

#[test]
fn per_source_limits_default_and_read_the_old_key_name() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.limits.max_allocations_per_source, 500);
    assert_eq!(c.limits.ipv6_source_prefix, 64);
    assert_eq!(c.connections.max_connections_per_source, 64);
    assert_eq!(c.connections.ipv6_source_prefix, 64);
    let c = parse(&format!(
        "{MINIMAL}\n[limits]\nmax_connections_per_ip = 5\nipv6_source_prefix = 56\nmax_allocations_per_source = 7"
    ))
    .unwrap();
    assert_eq!(c.connections.max_connections_per_source, 5);
    assert_eq!(c.connections.ipv6_source_prefix, 56);
    assert_eq!(c.limits.ipv6_source_prefix, 56);
    assert_eq!(c.limits.max_allocations_per_source, 7);
}

#[test]
fn drain_is_off_by_default_and_reads_its_alternates() {
    let off = parse(MINIMAL).unwrap();
    let on = parse(&MINIMAL.replace(
        "listen = [\"udp://127.0.0.1:3478\"]",
        "listen = [\"udp://127.0.0.1:3478\"]\ndrain_timeout = \"15m\"\n\
         alternate_servers = [\"192.0.2.2:3478\", \"[2001:db8::2]:3478\"]",
    ))
    .unwrap();

    assert_eq!(off.drain_timeout, Duration::ZERO);
    assert!(off.server_config().alternate_servers.is_empty());
    assert_eq!(on.drain_timeout, Duration::from_secs(900));
    assert_eq!(
        on.server_config().alternate_servers,
        vec![
            "192.0.2.2:3478".parse::<SocketAddr>().unwrap(),
            "[2001:db8::2]:3478".parse().unwrap()
        ]
    );
}

#[test]
fn shipped_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected dev.toml and eeaturn.example.toml");
}

#[test]
fn dev_config_is_loopback_only_and_marks_the_exemption() {
    let c = Config::parse(DEV_CONFIG, Path::new("config")).unwrap();
    assert!(c.listen.iter().all(|l| l.addr.ip().is_loopback()));
    assert!(c.relay.v4.is_some_and(|ip| ip.is_loopback()));
    assert!(DEV_CONFIG.contains("DEVELOPMENT SETTING"));
    assert_eq!(c.secret_file, Path::new("config/dev.secret"));
}

#[test]
fn unknown_keys_are_rejected_in_every_table() {
    let example = include_str!("../../config/eeaturn.example.toml");
    let tables = [
        "[server]",
        "[auth]",
        "[relay]",
        "[limits]",
        "[geo]",
        "[policy]",
        "[peers]",
        "[clients]",
        "[log]",
        "[metrics]",
        "[tls]",
        "[api]",
        "[[api.keys]]",
        "[evidence]",
    ];
    for table in tables {
        assert!(example.contains(table), "example lacks {table}");
        let mutated = example.replace(table, &format!("{table}\nno_such_key = 1"));
        match parse(&mutated) {
            Err(Error::Parse(m)) => assert!(m.contains("no_such_key"), "{table}: {m}"),
            other => panic!("{table}: expected a parse error, got {other:?}"),
        }
    }
    let top = format!("no_such_table = 1\n{example}");
    assert!(matches!(parse(&top), Err(Error::Parse(_))));
    // `[[policy.networks]]` is commented out in the example.
    let network = format!(
        "{MINIMAL}\n[[policy.networks]]\ncidr = \"198.51.100.0/24\"\ncountry = \"DE\"\nno_such_key = 1"
    );
    match parse(&network) {
        Err(Error::Parse(m)) => assert!(
            m.starts_with("config key `policy.networks.no_such_key`"),
            "{m}"
        ),
        other => panic!("[[policy.networks]]: expected a parse error, got {other:?}"),
    }
}

#[test]
fn validation_errors_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("realm = \"r.example\"", "realm = \"\"", "server.realm"),
        (
            "listen = [\"udp://127.0.0.1:3478\"]",
            "listen = []",
            "server.listen",
        ),
        (
            "listen = [\"udp://127.0.0.1:3478\"]",
            "listen = [\"127.0.0.1:3478\"]",
            "server.listen",
        ),
        (
            "listen = [\"udp://127.0.0.1:3478\"]",
            "listen = [\"sctp://127.0.0.1:3478\"]",
            "server.listen",
        ),
        (
            "listen = [\"udp://127.0.0.1:3478\"]",
            "listen = [\"udp://::1:3478\"]",
            "server.listen",
        ),
        (
            "listen = [\"udp://127.0.0.1:3478\"]",
            "listen = [\"udp://127.0.0.1:3478\", \"udp://127.0.0.1:3478\"]",
            "server.listen",
        ),
        (
            "secret_file = \"secret\"",
            "secret_file = \" \"",
            "auth.secret_file",
        ),
        (
            "listen = [\"udp://127.0.0.1:3478\"]",
            "listen = [\"udp://127.0.0.1:3478\"]\ndrain_timeout = \"25h\"",
            "server.drain_timeout",
        ),
        (
            "listen = [\"udp://127.0.0.1:3478\"]",
            "listen = [\"udp://127.0.0.1:3478\"]\nalternate_servers = [\"relay-b:3478\"]",
            "server.alternate_servers",
        ),
        (
            "listen = [\"udp://127.0.0.1:3478\"]",
            "listen = [\"udp://127.0.0.1:3478\"]\nalternate_servers = [\"0.0.0.0:3478\"]",
            "server.alternate_servers",
        ),
        (
            "listen = [\"udp://127.0.0.1:3478\"]",
            "listen = [\"udp://127.0.0.1:3478\"]\nalternate_servers = [\"127.0.0.1:3478\"]",
            "server.alternate_servers",
        ),
        (
            "addresses = [\"127.0.0.1\"]",
            "addresses = []",
            "relay.addresses",
        ),
        (
            "addresses = [\"127.0.0.1\"]",
            "addresses = [\"0.0.0.0\"]",
            "relay.addresses",
        ),
        (
            "addresses = [\"127.0.0.1\"]",
            "addresses = [\"127.0.0.1\", \"127.0.0.2\"]",
            "relay.addresses",
        ),
        (
            "addresses = [\"127.0.0.1\"]",
            "addresses = [\"localhost\"]",
            "relay.addresses",
        ),
        (
            "addresses = [\"127.0.0.1\"]",
            "addresses = [\"127.0.0.1\"]\nport_range = \"60000-50000\"",
            "relay.port_range",
        ),
        (
            "addresses = [\"127.0.0.1\"]",
            "addresses = [\"127.0.0.1\"]\nport_range = \"5000\"",
            "relay.port_range",
        ),
        (
            "addresses = [\"127.0.0.1\"]",
            "addresses = [\"127.0.0.1\"]\nexternal_addresses = [\"2001:db8::1\"]",
            "relay.external_addresses",
        ),
    ];
    for (from, to, key) in cases {
        let text = MINIMAL.replace(from, to);
        assert_ne!(text, MINIMAL, "case for {key} did not change the text");
        assert_eq!(invalid_key(&text), *key, "mutation {to:?}");
    }
}

#[test]
fn table_errors_name_the_key() {
    let with = |extra: &str| format!("{MINIMAL}\n{extra}");
    assert_eq!(
        invalid_key(&with("[limits]\nmax_allocations = 0")),
        "limits.max_allocations"
    );
    assert_eq!(
        invalid_key(&with("[limits]\ndefault_lifetime = \"10s\"")),
        "limits.default_lifetime"
    );
    assert_eq!(
        invalid_key(&with("[limits]\nmax_lifetime = \"5m\"")),
        "limits.max_lifetime"
    );
    assert_eq!(
        invalid_key(&with("[limits]\nmax_lifetime = \"2d\"")),
        "limits.max_lifetime"
    );
    assert_eq!(
        invalid_key(&with("[limits]\nipv6_source_prefix = 16")),
        "limits.ipv6_source_prefix"
    );
    assert_eq!(
        invalid_key(&with("[limits]\nmax_allocations_per_source = 0")),
        "limits.max_allocations_per_source"
    );
    assert_eq!(
        invalid_key(&with("[limits]\nmax_connections_per_source = 0")),
        "limits.max_connections_per_source"
    );
    assert_eq!(
        invalid_key(&with("[peers]\ndeny = [\"10.0.0.0/33\"]")),
        "peers.deny"
    );
    assert_eq!(
        invalid_key(&with("[peers]\ndangerous_allow = [\"nope\"]")),
        "peers.dangerous_allow"
    );
    assert_eq!(
        invalid_key(&with("[clients]\ndeny = [\"x\"]")),
        "clients.deny"
    );
    assert_eq!(invalid_key(&with("[log]\nformat = \"xml\"")), "log.format");
    assert_eq!(
        invalid_key(&with("[metrics]\nlisten = \"0.0.0.0:9464\"")),
        "metrics.listen"
    );
    assert_eq!(
        invalid_key(&with("[metrics]\nlisten = \"nope\"")),
        "metrics.listen"
    );
    assert_eq!(
        invalid_key(&MINIMAL.replace("[auth]", "[auth]\nmax_credential_ttl = \"25h\"")),
        "auth.max_credential_ttl"
    );
    assert_eq!(
        invalid_key(&MINIMAL.replace("[auth]", "[auth]\nnonce_lifetime = \"1s\"")),
        "auth.nonce_lifetime"
    );
}

#[test]
fn cidrs_accept_bare_addresses_and_truncate() {
    let c = parse(&format!(
        "{MINIMAL}\n[peers]\ndeny = [\"192.0.2.7/24\", \"2001:db8::1\"]"
    ))
    .unwrap();
    assert_eq!(c.rules.peer_deny[0].to_string(), "192.0.2.0/24");
    assert_eq!(c.rules.peer_deny[1].to_string(), "2001:db8::1/128");
}

#[test]
fn durations() {
    // The spellings the example configs, docs and tests use.
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    assert_eq!(parse_duration(" 10m "), Ok(Duration::from_secs(600)));
    assert_eq!(
        parse_duration("36500d"),
        Ok(Duration::from_secs(36_500 * 86_400))
    );
    // What humantime adds.
    assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("90min"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("2 days"), Ok(Duration::from_secs(172_800)));
    assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(7 * 86_400)));
    assert_eq!(
        parse_duration("2 weeks"),
        Ok(Duration::from_secs(14 * 86_400))
    );
    assert_eq!(parse_duration("1M"), Ok(Duration::from_secs(2_630_016)));
    for bad in [
        "",
        "10",
        "m",
        "1x",
        "-1s",
        "99999999999999999999d",
        "500ms",
        "1.5s",
    ] {
        let e = parse_duration(bad).unwrap_err();
        assert!(e.contains("write e.g. \"30s\""), "{bad:?}: {e}");
    }
}

#[test]
fn bad_durations_name_their_key_and_the_fix() {
    for (table, key) in [
        ("auth", "nonce_lifetime"),
        ("auth", "max_credential_ttl"),
        ("limits", "max_lifetime"),
        ("limits", "default_lifetime"),
        ("limits", "connection_setup_timeout"),
        ("limits", "connection_idle_timeout"),
        ("geo", "max_age"),
        ("geo", "watch_interval"),
    ] {
        for bad in ["\"1x\"", "\"10\"", "\"500ms\"", "60"] {
            let line = format!("{key} = {bad}");
            let text = if MINIMAL.contains(&format!("[{table}]")) {
                MINIMAL.replace(&format!("[{table}]"), &format!("[{table}]\n{line}"))
            } else {
                format!("{MINIMAL}\n[{table}]\n{line}")
            };
            let Err(Error::Parse(m)) = parse(&text) else {
                panic!("{table}.{key} = {bad}: expected a parse error");
            };
            assert!(
                m.starts_with(&format!("config key `{table}.{key}`: ")),
                "{table}.{key} = {bad}: {m}"
            );
            assert!(m.contains(&line), "the message shows the line: {m}");
            assert!(
                m.contains("write e.g. \"30s\""),
                "the message says the fix: {m}"
            );
        }
    }
    let text =
        format!("{MINIMAL}{API}").replace("[[api.keys]]", "max_ttl = \"soon\"\n[[api.keys]]");
    assert_eq!(invalid_key(&text), "api.max_ttl");
}

#[test]
fn durations_accept_humantime_spellings() {
    let c = parse(&format!(
        "{MINIMAL}\n[limits]\ndefault_lifetime = \"1h 30m\"\nmax_lifetime = \"1.5h\"\nconnection_idle_timeout = \"2 days\""
    ))
    .unwrap();
    assert_eq!(c.limits.default_lifetime, Duration::from_secs(5400));
    assert_eq!(c.limits.max_lifetime, Duration::from_secs(5400));
    assert_eq!(
        c.connections.connection_idle_timeout,
        Duration::from_secs(172_800)
    );
}

#[test]
fn missing_file_names_the_path() {
    let e = Config::load(Path::new("/nonexistent/eeaturn.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/eeaturn.toml"), "{e}");
}

#[test]
fn stream_listeners_and_tls() {
    let with_listen =
        |l: &str, extra: &str| MINIMAL.replace("listen = [\"udp://127.0.0.1:3478\"]", l) + extra;
    let c = parse(&with_listen(
        "listen = [\"udp://127.0.0.1:3478\", \"tcp://127.0.0.1:3478\", \"tcp://[::1]:3478\"]",
        "",
    ))
    .unwrap();
    assert_eq!(c.listen.len(), 3);
    assert_eq!(c.listen[1].transport, ListenTransport::Tcp);
    assert!(c.tls.is_none());
    assert_eq!(
        c.connections.connection_setup_timeout,
        Duration::from_secs(10)
    );
    assert_eq!(
        c.connections.connection_idle_timeout,
        Duration::from_secs(900)
    );
    // A tls:// listener needs [tls].
    assert_eq!(
        invalid_key(&with_listen("listen = [\"tls://127.0.0.1:5349\"]", "")),
        "tls"
    );
    let tls = "\n[tls]\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\n";
    let c = parse(&with_listen("listen = [\"tls://127.0.0.1:5349\"]", tls)).unwrap();
    let t = c.tls.unwrap();
    assert_eq!(t.certificate, Path::new("/etc/eeaturn/c.pem"));
    assert_eq!(t.groups, vec![TlsGroup::Secp256r1, TlsGroup::Secp384r1]);
    for (bad, key) in [
        ("profile = \"modern\"", "tls.profile"),
        ("groups = [\"x25519\"]", "tls.groups"),
        ("groups = []", "tls.groups"),
    ] {
        let text = with_listen(
            "listen = [\"tls://127.0.0.1:5349\"]",
            &format!("{tls}{bad}\n"),
        );
        assert_eq!(invalid_key(&text), key, "{bad}");
    }
    assert_eq!(
        invalid_key(&format!(
            "{MINIMAL}\n[limits]\nconnection_setup_timeout = \"0s\""
        )),
        "limits.connection_setup_timeout"
    );
}

const API: &str = r#"
[api]
listen = "http://127.0.0.1:8080"
uris = ["turn:turn.example.eu:3478?transport=udp"]
[[api.keys]]
name = "sig"
scope = "credentials"
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
"#;

#[test]
fn api_table_defaults() {
    let c = parse(&format!("{MINIMAL}{API}")).unwrap();
    let api = c.api.unwrap();
    assert!(!api.https);
    assert_eq!(api.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(api.default_ttl, Duration::from_secs(3600));
    assert_eq!(api.max_ttl, Duration::from_secs(86400));
    assert_eq!((api.rate_limit, api.rate_burst), (120, 20));
    assert!(api.cors_allowed_origins.is_empty());
    assert_eq!(api.keys[0].scope, Scope::Credentials);
    assert_eq!(api.keys[0].sha256[0], 0xba);
    assert!(parse(MINIMAL).unwrap().api.is_none());
    // max_ttl follows auth.max_credential_ttl down.
    let short = format!("{MINIMAL}{API}").replace(
        "secret_file = \"secret\"",
        "secret_file = \"secret\"\nmax_credential_ttl = \"2h\"",
    );
    assert_eq!(
        parse(&short).unwrap().api.unwrap().max_ttl,
        Duration::from_secs(7200)
    );
}

#[test]
fn api_errors_name_their_key() {
    let base = format!("{MINIMAL}{API}");
    let cases: &[(&str, &str, &str)] = &[
        ("http://127.0.0.1:8080", "http://0.0.0.0:8080", "api.listen"),
        (
            "http://127.0.0.1:8080",
            "http://192.0.2.1:8080",
            "api.listen",
        ),
        // https needs a [tls] table.
        (
            "http://127.0.0.1:8080",
            "https://127.0.0.1:8443",
            "api.listen",
        ),
        (
            "http://127.0.0.1:8080",
            "ftp://127.0.0.1:8080",
            "api.listen",
        ),
        (
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "api.listen",
        ),
        (
            "uris = [\"turn:turn.example.eu:3478?transport=udp\"]",
            "uris = []",
            "api.uris",
        ),
        (
            "uris = [\"turn:turn.example.eu:3478?transport=udp\"]",
            "uris = [\"https://turn.example.eu\"]",
            "api.uris",
        ),
        (
            "[[api.keys]]",
            "max_ttl = \"25h\"\n[[api.keys]]",
            "api.max_ttl",
        ),
        (
            "[[api.keys]]",
            "max_ttl = \"1h\"\ndefault_ttl = \"2h\"\n[[api.keys]]",
            "api.default_ttl",
        ),
        (
            "[[api.keys]]",
            "rate_limit = 0\n[[api.keys]]",
            "api.rate_limit",
        ),
        (
            "[[api.keys]]",
            "rate_burst = 0\n[[api.keys]]",
            "api.rate_burst",
        ),
        (
            "[[api.keys]]",
            "request_timeout = \"0s\"\n[[api.keys]]",
            "api.request_timeout",
        ),
        (
            "[[api.keys]]",
            "cors_allowed_origins = [\"*\"]\n[[api.keys]]",
            "api.cors_allowed_origins",
        ),
        (
            "[[api.keys]]",
            "cors_allowed_origins = [\"https://app.example/path\"]\n[[api.keys]]",
            "api.cors_allowed_origins",
        ),
        (
            "[[api.keys]]",
            "client_ca = \"ca.pem\"\n[[api.keys]]",
            "api.client_ca",
        ),
        ("name = \"sig\"", "name = \"sig nature\"", "api.keys.name"),
        // The metrics' label of requests without a valid key.
        ("name = \"sig\"", "name = \"none\"", "api.keys.name"),
        (
            "scope = \"credentials\"",
            "scope = \"admin\"",
            "api.keys.scope",
        ),
        (
            "sha256 = \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"",
            "sha256 = \"eeaturn_plaintext-key\"",
            "api.keys.sha256",
        ),
    ];
    for (from, to, key) in cases {
        let text = base.replacen(from, to, 1);
        assert_ne!(text, base, "case for {key} did not change the text");
        assert_eq!(invalid_key(&text), *key, "mutation {to:?}");
    }
    // No key at all.
    let no_keys = &base[..base.find("[[api.keys]]").unwrap()];
    assert_eq!(invalid_key(no_keys), "api.keys");
    // Two keys with one name.
    let twice = format!(
        "{base}[[api.keys]]\nname = \"sig\"\nscope = \"evidence\"\nsha256 = \"{}\"\n",
        "00".repeat(32)
    );
    assert_eq!(invalid_key(&twice), "api.keys.name");
}

#[test]
fn workers_and_socket_buffers() {
    let c = parse(MINIMAL).unwrap();
    assert!(c.workers >= 1, "0 means one per core");
    assert_eq!(c.sockets.buffer, 4 << 20);
    assert!(c.sockets.gso, "GSO is on by default");
    let c = parse(&MINIMAL.replace(
        "addresses = [\"127.0.0.1\"]",
        "addresses = [\"127.0.0.1\"]\ngso = false",
    ))
    .unwrap();
    assert!(!c.sockets.gso);
    let c = parse(&MINIMAL.replace(
        "addresses = [\"127.0.0.1\"]",
        "addresses = [\"127.0.0.1\"]\nsocket_buffer = \"512KiB\"",
    ))
    .unwrap();
    assert_eq!(c.sockets.buffer, 512 << 10);
    let c = parse(&MINIMAL.replace(
        "realm = \"r.example\"",
        "realm = \"r.example\"\nworkers = 3",
    ))
    .unwrap();
    assert_eq!(c.workers, 3);
    for bad in ["\"4GiB\"", "\"1KiB\"", "\"lots\"", "\"4 MB\""] {
        let text = MINIMAL.replace(
            "addresses = [\"127.0.0.1\"]",
            &format!("addresses = [\"127.0.0.1\"]\nsocket_buffer = {bad}"),
        );
        assert_eq!(invalid_key(&text), "relay.socket_buffer", "{bad}");
    }
    let text = MINIMAL.replace(
        "realm = \"r.example\"",
        "realm = \"r.example\"\nworkers = 1000",
    );
    assert_eq!(invalid_key(&text), "server.workers");
}

#[test]
fn evidence_is_off_by_default_and_gets_defaults_when_on() {
    assert!(parse(MINIMAL).unwrap().evidence.is_none());
    let c = parse(&format!(
        "{MINIMAL}\n[evidence]\nenabled = true\nsigning_key_file = \"ev.key\"\nnode_id = \"n1\""
    ))
    .unwrap();
    let e = c.evidence.unwrap();
    assert_eq!(e.directory, Path::new("/var/lib/eeaturn/evidence"));
    assert_eq!(e.signing_key_file, Path::new("/etc/eeaturn/ev.key"));
    assert_eq!(e.node_id, "n1");
    assert_eq!(e.site, "n1");
    assert_eq!(e.addresses, AddressMode::Pseudonym);
    assert_eq!(e.retention, Duration::from_secs(90 * 86_400));
    assert_eq!(e.segment_interval, Duration::from_secs(3600));
    assert_eq!(e.segment_max_size, 64 << 20);
    assert_eq!(e.checkpoint_interval, Duration::from_secs(60));
    assert_eq!(e.fsync, Fsync::Interval);
    assert_eq!(e.queue_capacity, 65_536);
    assert_eq!(e.memory_limit, 64 << 20);
}

#[test]
fn shipped_configs_enable_evidence_with_the_development_key() {
    let dev = Config::parse(DEV_CONFIG, Path::new("config")).unwrap();
    let e = dev.evidence.unwrap();
    assert_eq!(e.signing_key_file, Path::new("config/dev-evidence.key"));
    let key = include_str!("../../config/dev-evidence.key");
    assert!(
        key.starts_with("# DEVELOPMENT ONLY"),
        "the dev key is labelled"
    );
    let example = include_str!("../../config/eeaturn.example.toml");
    let c = Config::parse(example, Path::new("config")).unwrap();
    assert_eq!(c.evidence.unwrap().addresses, AddressMode::Pseudonym);
}

#[test]
fn evidence_errors_name_their_key() {
    let with = |extra: &str| {
        format!("{MINIMAL}\n[evidence]\nenabled = true\nsigning_key_file = \"k\"\n{extra}")
    };
    let cases = [
        ("retention = \"93d\"", "evidence.retention"),
        ("retention = \"0s\"", "evidence.retention"),
        ("retention = \"soon\"", "evidence.retention"),
        ("addresses = \"hashed\"", "evidence.addresses"),
        ("fsync = \"never\"", "evidence.fsync"),
        ("segment_interval = \"10s\"", "evidence.segment_interval"),
        ("segment_max_size = \"1KiB\"", "evidence.segment_max_size"),
        ("segment_max_size = \"big\"", "evidence.segment_max_size"),
        (
            "checkpoint_interval = \"2h\"",
            "evidence.checkpoint_interval",
        ),
        ("queue_capacity = 1", "evidence.queue_capacity"),
        ("memory_limit = \"1KiB\"", "evidence.memory_limit"),
        ("node_id = \"\"", "evidence.node_id"),
        ("directory = \" \"", "evidence.directory"),
    ];
    for (extra, key) in cases {
        assert_eq!(invalid_key(&with(extra)), key, "{extra}");
    }
    assert_eq!(
        invalid_key(&with("").replace("signing_key_file = \"k\"", "signing_key_file = \"\"")),
        "evidence.signing_key_file"
    );
    assert!(parse(&with("retention = \"92d\"")).is_ok());
}

#[test]
fn an_exposed_metrics_listener_needs_tls_and_a_token() {
    let tls = "[tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n";
    let with = |t: &str| format!("{MINIMAL}\n{t}");
    // Plain HTTP beyond loopback, https without [tls], an empty token file: each names its key.
    assert_eq!(
        invalid_key(&with("[metrics]\nlisten = \"http://192.0.2.1:9464\"")),
        "metrics.listen"
    );
    assert_eq!(
        invalid_key(&with(
            "[metrics]\nlisten = \"https://192.0.2.1:9464\"\ntoken_file = \"t\""
        )),
        "metrics.listen"
    );
    assert_eq!(
        invalid_key(&with(&format!(
            "[metrics]\nlisten = \"https://192.0.2.1:9464\"\ntoken_file = \"\"\n{tls}"
        ))),
        "metrics.token_file"
    );
    assert_eq!(
        invalid_key(&with("[metrics]\ntoken_file = \"t\"")),
        "metrics.token_file"
    );
    let exposed = parse(&with(&format!(
        "[metrics]\nlisten = \"https://192.0.2.1:9464\"\ntoken_file = \"metrics-token\"\n{tls}"
    )))
    .unwrap()
    .metrics
    .unwrap();
    assert!(exposed.https);
    assert_eq!(
        exposed.token_file.as_deref(),
        Some(Path::new("/etc/eeaturn/metrics-token"))
    );
    // Loopback: plain HTTP, with or without the http:// prefix, and no token needed.
    for listen in ["127.0.0.1:9464", "http://[::1]:9464"] {
        let m = parse(&with(&format!("[metrics]\nlisten = \"{listen}\"")))
            .unwrap()
            .metrics
            .unwrap();
        assert!(!m.https && m.token_file.is_none() && m.listen.ip().is_loopback());
    }
}

#[test]
fn api_keys_come_from_a_keys_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let table = "[[api.keys]]\nname = \"fra\"\nscope = \"evidence\"\nsha256 = \"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"\n";
    std::fs::write(dir.path().join("api-keys"), table).unwrap();
    let with_file = |api: &str| {
        let text = format!("{MINIMAL}{api}")
            .replace("[[api.keys]]", "keys_file = \"api-keys\"\n[[api.keys]]");
        Config::parse(&text, dir.path())
    };
    // Inline and file keys are both accepted; the file resolves against the config's directory.
    let api = with_file(API).unwrap().api.unwrap();
    let names: Vec<_> = api
        .keys
        .iter()
        .map(|k| (k.name.as_str(), k.scope))
        .collect();
    assert_eq!(
        names,
        [("sig", Scope::Credentials), ("fra", Scope::Evidence)]
    );
    // The file alone is enough.
    let only_file = format!(
        "{MINIMAL}[api]\nlisten = \"http://127.0.0.1:8080\"\nuris = [\"turn:t.example.eu\"]\nkeys_file = \"api-keys\"\n"
    );
    let api = Config::parse(&only_file, dir.path()).unwrap().api.unwrap();
    assert_eq!(api.keys.len(), 1);
    // A name used inline and in the file is refused like two inline keys.
    let dup = API.replace("name = \"sig\"", "name = \"fra\"");
    assert!(matches!(
        with_file(&dup),
        Err(Error::Invalid {
            key: "api.keys.name",
            ..
        })
    ));

    let key_of = |file_text: Option<&str>| {
        match file_text {
            Some(t) => std::fs::write(dir.path().join("api-keys"), t).unwrap(),
            None => std::fs::remove_file(dir.path().join("api-keys")).unwrap(),
        }
        match Config::parse(&only_file, dir.path()) {
            Err(Error::Invalid { key, .. }) => key,
            other => panic!("expected an invalid api.keys_file, got {other:?}"),
        }
    };
    // Anything but [[api.keys]] tables, an empty file, a bad hash, a missing file.
    assert_eq!(key_of(Some("[server]\nrealm = \"x\"\n")), "api.keys_file");
    assert_eq!(
        key_of(Some(&table.replace("scope", "scop"))),
        "api.keys_file"
    );
    assert_eq!(key_of(Some("")), "api.keys_file");
    assert_eq!(
        key_of(Some(&table.replace("2cf2", "zz"))),
        "api.keys.sha256"
    );
    assert_eq!(key_of(None), "api.keys_file");
    let empty_name = only_file.replace("keys_file = \"api-keys\"", "keys_file = \" \"");
    assert!(matches!(
        Config::parse(&empty_name, dir.path()),
        Err(Error::Invalid {
            key: "api.keys_file",
            ..
        })
    ));
}

#[test]
fn relay_offload_is_auto_unless_set() {
    assert_eq!(parse(MINIMAL).unwrap().sockets.offload, Offload::Auto);
    for (value, want) in [
        ("off", Offload::Off),
        ("auto", Offload::Auto),
        ("required", Offload::Required),
    ] {
        let text = MINIMAL.replace(
            "addresses = [\"127.0.0.1\"]",
            &format!("addresses = [\"127.0.0.1\"]\noffload = \"{value}\""),
        );
        assert_eq!(parse(&text).unwrap().sockets.offload, want);
    }
    let bad = MINIMAL.replace(
        "addresses = [\"127.0.0.1\"]",
        "addresses = [\"127.0.0.1\"]\noffload = \"on\"",
    );
    assert_eq!(invalid_key(&bad), "relay.offload");
    let Err(Error::Parse(m)) = parse(&bad) else {
        panic!("a bad offload value is a parse error");
    };
    assert!(m.contains("auto") && m.contains("required"), "{m}");
}

#[test]
fn unauthenticated_answer_budget_defaults_bounds_and_off() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.answer_limit, AnswerLimit::DEFAULT);
    assert_eq!(c.server_config().answer_limit, c.answer_limit);
    let with = |extra: &str| format!("{MINIMAL}\n[limits]\n{extra}");
    for (text, key) in [
        (
            "unauthenticated_burst = 100",
            "limits.unauthenticated_burst",
        ),
        ("unauthenticated_rate = 0", "limits.unauthenticated_rate"),
        (
            "unauthenticated_table_size = 0",
            "limits.unauthenticated_table_size",
        ),
        ("unauthenticated_rate = -1", "limits.unauthenticated_rate"),
    ] {
        assert_eq!(invalid_key(&with(text)), key, "{text}");
    }
    let Err(Error::Invalid { message, .. }) = parse(&with("unauthenticated_burst = 100")) else {
        panic!("a small burst is refused");
    };
    assert!(message.contains("at least 1024"), "{message}");
    let off = parse(&with("unauthenticated_rate = 0\nunauthenticated_burst = 0")).unwrap();
    assert_eq!(off.answer_limit, AnswerLimit::OFF);
    let set = parse(&with(
        "unauthenticated_rate = 500\nunauthenticated_burst = 4000",
    ))
    .unwrap();
    assert_eq!((set.answer_limit.rate, set.answer_limit.burst), (500, 4000));
}
