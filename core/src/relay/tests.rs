//! Core scenarios: every request method and its error paths, driven through [`Server`] with a
//! hand-advanced clock and a seeded RNG. No sockets, no sleeps.
//!
//! Each test builds a [`TestServer`] (realm `eeaturn.test`, relays on 127.0.0.1 and ::1, ports
//! 50000-50019, small limits), talks to it through [`Client`]s that do the long-term
//! credential dance, and asserts the exact responses, commands and events. Helpers are at the
//! bottom.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::{
    BindResult, BindToken, Command, EndReason, Event, FiveTuple, Limits, Now, PEER_HEADROOM,
    PEER_TAILROOM, PeerTransmit, Server, ServerConfig, TrafficCounters, Transport,
};
use crate::credentials::Secrets;
use crate::host::RelayAddresses;
use crate::policy::{Policy, Rule, Subject};
use crate::stun::attr;
use crate::stun::integrity::{fingerprint, long_term_key_md5, long_term_key_sha256};
use crate::stun::{
    ChannelData, Class, Message, MessageBuilder, MessageType, Method, TransactionId,
};

// ---------------------------------------------------------------------------------------------
// Binding
// ---------------------------------------------------------------------------------------------

#[test]
fn binding_answers_with_the_client_address_and_a_valid_fingerprint() {
    let mut ts = TestServer::new();
    let from = five_tuple("127.0.0.1:40001");
    let tid = ts.next_tid();

    let cmds = ts.send(from, &Req::new(Method::BINDING).encode(tid, None));

    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let r = response(&cmds);
    r.assert_ok();
    let m = r.msg();
    assert_eq!(m.method(), Method::BINDING);
    assert_eq!(m.transaction_id(), tid);
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(from.client));
    assert!(!m.has_integrity());
    let n = r.0.len();
    assert_eq!(
        &r.0[n - 8..n - 4],
        &[0x80, 0x28, 0x00, 0x04],
        "FINGERPRINT comes last"
    );
    let crc = u32::from_be_bytes(<[u8; 4]>::try_from(&r.0[n - 4..]).unwrap());
    assert_eq!(crc, fingerprint(&r.0, n - 8));
    assert_eq!(ts.server.stats().requests_ok.get("binding"), Some(&1));
}

#[test]
fn binding_with_unknown_comprehension_required_attribute_is_420() {
    let mut ts = TestServer::new();
    let from = five_tuple("127.0.0.1:40001");
    let req = Req::new(Method::BINDING).attr(0x0031, &[1, 2, 3, 4]);

    let r = ts.unauthenticated(from, &req);

    r.assert_error(420);
    assert_eq!(r.msg().method(), Method::BINDING);
    assert_eq!(r.get(attr::UNKNOWN_ATTRIBUTES), Some(vec![0x00, 0x31]));
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), None);
}

#[test]
fn binding_ignores_unknown_comprehension_optional_attribute() {
    let mut ts = TestServer::new();
    let from = five_tuple("127.0.0.1:40001");
    let req = Req::new(Method::BINDING).attr(0xC0DE, b"whatever");

    let r = ts.unauthenticated(from, &req);

    r.assert_ok();
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(from.client));
    assert_eq!(r.get(attr::UNKNOWN_ATTRIBUTES), None);
}

// ---------------------------------------------------------------------------------------------
// Long-term credentials
// ---------------------------------------------------------------------------------------------

#[test]
fn request_without_integrity_is_challenged_with_realm_nonce_and_algorithms() {
    let mut ts = TestServer::new();
    let from = five_tuple("127.0.0.1:40001");
    let tid = ts.next_tid();

    let cmds = ts.send(from, &Req::allocate().encode(tid, None));

    assert_eq!(
        cmds.len(),
        1,
        "no relay is bound for an unauthenticated request"
    );
    let r = response(&cmds);
    r.assert_error(401);
    assert_eq!(r.get(attr::REALM), Some(REALM.as_bytes().to_vec()));
    let nonce = r.nonce().expect("a 401 carries NONCE");
    assert!(nonce.starts_with("obMatJos2"), "{nonce}");
    assert_eq!(
        r.get(attr::PASSWORD_ALGORITHMS),
        Some(PASSWORD_ALGORITHMS_OFFER.to_vec())
    );
    assert!(!r.msg().has_integrity());
    assert_eq!(ts.server.allocation_count(), 0);
    assert!(ts.take_events().is_empty());
}

#[test]
fn wrong_password_is_401() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    c.creds.password = "not-the-password".to_owned();

    let cmds = ts.exchange(&mut c, &Req::allocate());

    let r = response(&cmds);
    r.assert_error(401);
    assert!(r.nonce().is_some());
    assert!(!r.msg().has_integrity());
    assert!(bind_requests(&cmds).is_empty());
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn expired_rest_username_is_401() {
    let mut ts = TestServer::new();
    let signer = Secrets::parse(SECRET).unwrap();
    let expired = format!("{}:alice", WALL_START - 60);
    let valid = format!("{}:alice", WALL_START + 60);
    let mut old = ts.client_with("127.0.0.1:40001", &expired, &signer);
    let mut fresh = ts.client_with("127.0.0.1:40002", &valid, &signer);

    let refused = response(&ts.exchange(&mut old, &Req::allocate()));
    let accepted = response(&ts.exchange(&mut fresh, &Req::allocate()));

    refused.assert_error(401);
    assert!(refused.nonce().is_some());
    accepted.assert_ok();
    assert_eq!(ts.server.allocation_count(), 1);
}

#[test]
fn username_expiring_beyond_max_credential_ttl_is_401() {
    let mut ts = TestServer::new();
    let signer = Secrets::parse(SECRET).unwrap();
    // max_credential_ttl is one day; the server tolerates a few minutes of issuer clock skew.
    let too_long = format!("{}:alice", WALL_START + 86_400 + 3_600);
    let at_max = format!("{}:alice", WALL_START + 86_400);
    let mut greedy = ts.client_with("127.0.0.1:40001", &too_long, &signer);
    let mut fair = ts.client_with("127.0.0.1:40002", &at_max, &signer);

    let refused = response(&ts.exchange(&mut greedy, &Req::allocate()));
    let accepted = response(&ts.exchange(&mut fair, &Req::allocate()));

    refused.assert_error(401);
    accepted.assert_ok();
}

#[test]
fn malformed_username_is_401() {
    let mut ts = TestServer::new();
    let signer = Secrets::parse(SECRET).unwrap();
    for (port, username) in [
        (40001, "alice"),
        (40002, "alice:1700003600"),
        (40003, ":alice"),
    ] {
        // The password is the correct HMAC of the malformed name: only its form is wrong.
        let mut c = ts.client_with(&format!("127.0.0.1:{port}"), username, &signer);

        let r = response(&ts.exchange(&mut c, &Req::allocate()));

        r.assert_error(401);
        assert!(r.nonce().is_some(), "{username}");
    }
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn wrong_realm_is_401() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    // The key is consistent with the wrong realm, so only the realm differs.
    c.creds.realm = "elsewhere.test".to_owned();

    let r = response(&ts.exchange(&mut c, &Req::allocate()));

    r.assert_error(401);
    assert_eq!(r.get(attr::REALM), Some(REALM.as_bytes().to_vec()));
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn integrity_without_nonce_is_400() {
    let mut ts = TestServer::new();
    let c = ts.client(40001);
    let mut auth = c.auth();
    auth.nonce = None;
    let tid = ts.next_tid();

    let r = response(&ts.send(c.five_tuple, &Req::allocate().encode(tid, Some(&auth))));

    r.assert_error(400);
    assert_eq!(r.nonce(), None, "a 400 is not a challenge");
    assert_eq!(r.get(attr::REALM), None);
    assert!(!r.msg().has_integrity());
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn stale_nonce_is_438_with_a_fresh_nonce_that_works() {
    let mut ts = TestServer::new();
    let mut early = ts.client(40001);
    let mut late = ts.client(40002);
    ts.fetch_nonce(&mut early, Method::ALLOCATE);
    let old = early.nonce.clone().unwrap();
    late.nonce = Some(old.clone()); // same client IP: the same nonce is valid for both

    ts.advance(secs(599));
    let still_valid = response(&ts.exchange(&mut early, &Req::allocate()));
    ts.advance(secs(2));
    let stale = response(&ts.exchange(&mut late, &Req::allocate()));

    still_valid.assert_ok();
    stale.assert_error(438);
    let fresh = stale.nonce().expect("a 438 carries a fresh NONCE");
    assert_ne!(fresh, old);
    assert!(fresh.starts_with("obMatJos2"));
    assert_eq!(stale.get(attr::REALM), Some(REALM.as_bytes().to_vec()));
    assert_eq!(
        stale.get(attr::PASSWORD_ALGORITHMS),
        Some(PASSWORD_ALGORITHMS_OFFER.to_vec())
    );
    assert_eq!(ts.server.allocation_count(), 1);

    late.nonce = Some(fresh);
    let retried = response(&ts.exchange(&mut late, &Req::allocate()));
    retried.assert_ok();
    assert_eq!(ts.server.allocation_count(), 2);
}

#[test]
fn forged_nonce_is_438() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let mut other_ip = ts.client(40001);
    other_ip.five_tuple = five_tuple("127.0.0.2:40001");
    ts.fetch_nonce(&mut c, Method::ALLOCATE);
    ts.fetch_nonce(&mut other_ip, Method::ALLOCATE);
    let good = c.nonce.clone().unwrap();
    let mut bad_mac = good.clone();
    let last = bad_mac.pop().unwrap();
    bad_mac.push(if last == '0' { '1' } else { '0' });
    // Cookie (9) + features (4) + expiry (16 hex) + MAC (16 hex): push the expiry out.
    let later_expiry = format!("{}{}{}", &good[..13], "00000000ffffffff", &good[29..]);
    let forgeries = [
        bad_mac,
        later_expiry,
        other_ip.nonce.clone().unwrap(),
        "obMatJos2gAAA".to_owned(),
        "not-a-nonce-at-all".to_owned(),
    ];

    for forged in forgeries {
        c.nonce = Some(forged.clone());
        let r = response(&ts.exchange(&mut c, &Req::allocate()));
        r.assert_error(438);
        let fresh = r.nonce().unwrap();
        assert_ne!(fresh, forged);
        assert!(fresh.starts_with("obMatJos2"));
    }
    assert_eq!(ts.server.allocation_count(), 0);

    c.nonce = Some(good);
    response(&ts.exchange(&mut c, &Req::allocate())).assert_ok();
}

#[test]
fn sha256_password_algorithm_is_answered_with_sha256_integrity() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    c.creds.sha256 = true;

    let r = ts.call(&mut c, &Req::allocate());

    r.assert_ok();
    let m = r.msg();
    assert!(m.has_integrity_sha256());
    let sha_key = long_term_key_sha256(&c.creds.username, REALM, &c.creds.password);
    let md5_key = long_term_key_md5(&c.creds.username, REALM, &c.creds.password);
    assert!(m.verify_integrity(&sha_key));
    assert!(!m.verify_integrity(&md5_key));
    assert_eq!(ts.server.allocation_count(), 1);
}

#[test]
fn password_algorithm_without_matching_password_algorithms_is_400() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    c.creds.sha256 = true;
    ts.fetch_nonce(&mut c, Method::ALLOCATE);
    // Missing, downgraded (MD5 only) and reordered offers.
    let offers: [Option<&[u8]>; 3] = [None, Some(&[0, 1, 0, 0]), Some(&[0, 1, 0, 0, 0, 2, 0, 0])];

    for offer in offers {
        let mut auth = c.auth();
        auth.algorithms = offer.map(<[u8]>::to_vec);
        let tid = ts.next_tid();
        let r = response(&ts.send(c.five_tuple, &Req::allocate().encode(tid, Some(&auth))));
        r.assert_error(400);
    }
    assert_eq!(ts.server.allocation_count(), 0);
}

/// RFC 8489 §9.2.4: unless the request has neither PASSWORD-ALGORITHMS nor PASSWORD-ALGORITHM,
/// both must be present; otherwise 400.
#[test]
fn password_algorithms_without_password_algorithm_is_400() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.fetch_nonce(&mut c, Method::ALLOCATE);
    let mut auth = c.auth(); // MD5 key, MESSAGE-INTEGRITY
    auth.algorithms = Some(PASSWORD_ALGORITHMS_OFFER.to_vec());
    auth.algorithm = None;
    let tid = ts.next_tid();

    let r = response(&ts.send(c.five_tuple, &Req::allocate().encode(tid, Some(&auth))));

    r.assert_error(400);
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn older_secret_is_accepted_until_rotated_out() {
    let mut ts = TestServer::build(
        config(),
        policy(),
        &format!("{SECRET}\n{OLD_SECRET}\n"),
        SEED,
    );
    let old = Secrets::parse(OLD_SECRET).unwrap();
    let username = format!("{}:alice", WALL_START + 3600);
    let mut a = ts.client_with("127.0.0.1:40001", &username, &old);
    let mut b = ts.client_with("127.0.0.1:40002", &username, &old);

    ts.allocate(&mut a);
    ts.server.replace_secrets(Secrets::parse(SECRET).unwrap());
    let refused = ts.call(&mut b, &Req::allocate());
    let refresh = ts.call(&mut a, &Req::refresh());

    refused.assert_error(401);
    refresh.assert_error(401);
    assert_eq!(ts.server.allocation_count(), 1);
    let mut current = ts.client(40003); // signed with the first (current) secret
    ts.allocate(&mut current);
    assert_eq!(ts.server.allocation_count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Allocate
// ---------------------------------------------------------------------------------------------

#[test]
fn allocate_success_carries_relayed_lifetime_mapped_and_integrity() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);

    let (r, cmds) = ts.call_cmds(&mut c, &Req::allocate());

    r.assert_ok();
    let relayed = r.xors(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 1);
    let relayed = relayed[0];
    assert_eq!(relayed.ip(), ip("127.0.0.1"));
    assert!(PORTS.contains(&relayed.port()), "{relayed}");
    assert_eq!(r.lifetime(), Some(600));
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(c.five_tuple.client));
    assert_eq!(r.get(attr::RESERVATION_TOKEN), None);
    assert!(r.msg().verify_integrity(&c.creds.key()));
    assert!(
        !r.msg()
            .verify_integrity(&long_term_key_md5(&c.creds.username, REALM, "wrong"))
    );
    let binds: Vec<Vec<SocketAddr>> = bind_requests(&cmds).into_iter().map(|b| b.1).collect();
    assert_eq!(binds, vec![vec![relayed]]);
    let events = ts.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0] {
        Event::AllocationCreated {
            at,
            transport,
            client,
            user,
            relayed: advertised,
            lifetime,
            ..
        } => {
            assert_eq!(*at, ts.now.wall);
            assert_eq!(*transport, Transport::Udp);
            assert_eq!(*client, c.five_tuple.client);
            assert_eq!(user, "alice");
            assert_eq!(advertised, &vec![relayed]);
            assert_eq!(*lifetime, secs(600));
        }
        other => panic!("unexpected event {other:?}"),
    }
    assert_eq!(ts.server.allocation_count(), 1);
    assert_eq!(ts.server.stats().allocations_created, 1);
    assert_eq!(ts.server.stats().requests_ok.get("allocate"), Some(&1));
}

#[test]
fn allocate_lifetime_defaults_is_capped_and_is_raised_to_the_default() {
    // default 600 s, maximum 3600 s
    let cases = [
        (None, 600),
        (Some(1800), 1800),
        (Some(7200), 3600),
        (Some(60), 600),
        (Some(0), 600),
    ];
    for (asked, granted) in cases {
        let mut ts = TestServer::new();
        let mut c = ts.client(40001);
        let mut req = Req::allocate();
        if let Some(s) = asked {
            req = req.lifetime(s);
        }

        let r = ts.call(&mut c, &req);

        r.assert_ok();
        assert_eq!(r.lifetime(), Some(granted), "asked {asked:?}");
        let created = ts.take_events();
        assert!(
            matches!(&created[..], [Event::AllocationCreated { lifetime, .. }] if *lifetime == secs(u64::from(granted))),
            "{created:?}"
        );
    }
}

#[test]
fn allocate_retransmission_gets_identical_response_and_no_second_allocation() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let req = Req::allocate().tid(ts.next_tid());
    let (first, _) = ts.call_cmds(&mut c, &req);
    first.assert_ok();
    ts.take_events();

    let again = ts.exchange(&mut c, &req);

    assert_eq!(again.len(), 1, "only the stored response: {again:?}");
    assert_eq!(response(&again), first);
    assert_eq!(ts.server.allocation_count(), 1);
    assert_eq!(ts.server.stats().allocations_created, 1);
    assert!(ts.take_events().is_empty());
}

#[test]
fn allocate_retransmission_while_binding_is_not_answered_twice() {
    let mut ts = TestServer::new();
    ts.bind = None;
    let mut c = ts.client(40001);
    let req = Req::allocate().tid(ts.next_tid());
    let cmds = ts.exchange(&mut c, &req);
    let binds = bind_requests(&cmds);
    let [(token, addrs)] = &binds[..] else {
        panic!("expected one BindRelay in {cmds:?}");
    };
    assert!(responses(&cmds).is_empty());

    let again = ts.exchange(&mut c, &req);
    ts.server
        .handle_relay_bound(*token, addrs, BindResult::Bound, ts.now);
    let done = ts.drain();

    assert!(again.is_empty(), "{again:?}");
    let r = response(&done);
    r.assert_ok();
    assert_eq!(r.msg().transaction_id(), req.tid.unwrap());
    assert_eq!(ts.server.allocation_count(), 1);
}

#[test]
fn second_allocate_on_the_same_five_tuple_is_437() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);

    let (r, cmds) = ts.call_cmds(&mut c, &Req::allocate());

    r.assert_error(437);
    assert!(r.msg().verify_integrity(&c.creds.key()));
    assert!(bind_requests(&cmds).is_empty());
    assert_eq!(ts.server.allocation_count(), 1);
}

#[test]
fn allocate_without_requested_transport_is_400() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);

    let r = ts.call(&mut c, &Req::new(Method::ALLOCATE));

    r.assert_error(400);
    assert!(r.msg().verify_integrity(&c.creds.key()));
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn allocate_tcp_is_442() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let req = Req::new(Method::ALLOCATE).attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);

    let r = ts.call(&mut c, &req);

    r.assert_error(442);
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn allocate_ipv6_family_relays_on_ipv6() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let req = Req::allocate().attr(attr::REQUESTED_ADDRESS_FAMILY, &FAMILY_V6);

    let (r, cmds) = ts.call_cmds(&mut c, &req);

    r.assert_ok();
    let relayed = r.xors(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].ip(), ip("::1"));
    assert!(PORTS.contains(&relayed[0].port()));
    let binds: Vec<Vec<SocketAddr>> = bind_requests(&cmds).into_iter().map(|b| b.1).collect();
    assert_eq!(binds, vec![relayed]);
    // The mapped address stays the client's IPv4 address.
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(c.five_tuple.client));
}

#[test]
fn allocate_additional_ipv6_family_relays_on_both() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let req = Req::allocate().attr(attr::ADDITIONAL_ADDRESS_FAMILY, &FAMILY_V6);

    let (r, cmds) = ts.call_cmds(&mut c, &req);

    r.assert_ok();
    let relayed = r.xors(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    assert_eq!(relayed[0].ip(), ip("127.0.0.1"));
    assert_eq!(relayed[1].ip(), ip("::1"));
    assert_eq!(r.get(attr::ADDRESS_ERROR_CODE), None);
    let binds: Vec<Vec<SocketAddr>> = bind_requests(&cmds).into_iter().map(|b| b.1).collect();
    assert_eq!(binds, vec![relayed]);
}

#[test]
fn ipv4_only_server_refuses_ipv6_with_440_and_answers_dual_with_address_error_code() {
    let mut cfg = config();
    cfg.relay.v6 = None;
    let mut ts = TestServer::with_config(cfg);
    let mut v6 = ts.client(40001);
    let mut dual = ts.client(40002);

    let refused = ts.call(
        &mut v6,
        &Req::allocate().attr(attr::REQUESTED_ADDRESS_FAMILY, &FAMILY_V6),
    );
    let partial = ts.call(
        &mut dual,
        &Req::allocate().attr(attr::ADDITIONAL_ADDRESS_FAMILY, &FAMILY_V6),
    );

    refused.assert_error(440);
    partial.assert_ok();
    let relayed = partial.xors(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].ip(), ip("127.0.0.1"));
    let aec = partial
        .get(attr::ADDRESS_ERROR_CODE)
        .expect("ADDRESS-ERROR-CODE for the refused family");
    assert_eq!(aec[0], attr::FAMILY_IPV6);
    assert_eq!((aec[2] & 0x07, aec[3]), (4, 40));
    assert_eq!(ts.server.allocation_count(), 1);
}

#[test]
fn allocate_with_dont_fragment_is_420() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);

    let r = ts.call(&mut c, &Req::allocate().attr(attr::DONT_FRAGMENT, &[]));

    r.assert_error(420);
    assert_eq!(r.get(attr::UNKNOWN_ATTRIBUTES), Some(vec![0x00, 0x1A]));
    assert!(r.msg().verify_integrity(&c.creds.key()));
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn even_port_gives_an_even_port() {
    for seed in 0..16 {
        let mut ts = TestServer::build(config(), policy(), SECRET, seed);
        let mut c = ts.client(40001);

        let r = ts.call(&mut c, &Req::allocate().attr(attr::EVEN_PORT, &[0x00]));

        r.assert_ok();
        let port = r.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port();
        assert_eq!(port % 2, 0, "seed {seed}: port {port}");
        assert_eq!(r.get(attr::RESERVATION_TOKEN), None);
    }
}

#[test]
fn even_port_reservation_hands_the_next_port_to_the_token_holder() {
    let mut ts = TestServer::new();
    let mut alice = ts.client(40001);
    let mut bob = ts.client_as("127.0.0.1:40002", "bob");
    let mut carol = ts.client_as("127.0.0.1:40003", "carol");

    let first = ts.call(&mut alice, &Req::allocate().attr(attr::EVEN_PORT, &[0x80]));
    first.assert_ok();
    let port = first.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port();
    let token = first
        .get(attr::RESERVATION_TOKEN)
        .expect("RESERVATION-TOKEN");
    let second = ts.call(
        &mut bob,
        &Req::allocate().attr(attr::RESERVATION_TOKEN, &token),
    );
    let reused = ts.call(
        &mut carol,
        &Req::allocate().attr(attr::RESERVATION_TOKEN, &token),
    );

    assert_eq!(port % 2, 0);
    assert_eq!(token.len(), 8);
    second.assert_ok();
    assert_eq!(
        second.xor(attr::XOR_RELAYED_ADDRESS),
        Some(SocketAddr::new(ip("127.0.0.1"), port + 1))
    );
    reused.assert_error(508);
    assert_eq!(ts.server.allocation_count(), 2);
    // The reserved port is bound with the first allocation's, held, and taken by the second.
    let reserved = SocketAddr::new(ip("127.0.0.1"), port + 1);
    let binds: Vec<_> = ts
        .log
        .iter()
        .filter_map(|c| match c {
            Command::BindRelay { addrs, reserve, .. } => Some((addrs.clone(), *reserve)),
            _ => None,
        })
        .collect();
    assert_eq!(
        binds,
        vec![
            (vec![SocketAddr::new(ip("127.0.0.1"), port)], Some(reserved)),
            (vec![reserved], None),
        ]
    );
    // Redeemed: nothing to release when its time would have run out.
    ts.advance(secs(31));
    assert!(
        !ts.log
            .iter()
            .any(|c| matches!(c, Command::ReleaseReserved { .. })),
        "{:?}",
        ts.log
    );
}

#[test]
fn unused_reservation_is_released_after_30_seconds() {
    let mut cfg = roomy_config();
    cfg.relay.ports = 50000..=50001;
    let mut ts = TestServer::with_config(cfg);
    let mut alice = ts.client(40001);
    let mut bob = ts.client(40002);
    let mut carol = ts.client(40003);
    let r = ts.call(&mut alice, &Req::allocate().attr(attr::EVEN_PORT, &[0x80]));
    let token = r.get(attr::RESERVATION_TOKEN).unwrap();

    let held = ts.call(&mut bob, &Req::allocate());
    ts.advance(secs(30));
    let late = ts.call(
        &mut carol,
        &Req::allocate().attr(attr::RESERVATION_TOKEN, &token),
    );
    let freed = ts.call(&mut bob, &Req::allocate());

    held.assert_error(508); // the reserved port is not handed out meanwhile
    late.assert_error(508);
    freed.assert_ok();
    // The socket held for it is closed when it runs out.
    let reserved = SocketAddr::new(
        ip("127.0.0.1"),
        r.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port() + 1,
    );
    assert!(
        ts.log
            .contains(&Command::ReleaseReserved { addr: reserved }),
        "{:?}",
        ts.log
    );
    assert_eq!(
        freed.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port(),
        r.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port() + 1
    );
}

#[test]
fn unknown_reservation_token_is_508() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let req = Req::allocate().attr(attr::RESERVATION_TOKEN, &[1, 2, 3, 4, 5, 6, 7, 8]);

    let r = ts.call(&mut c, &req);

    r.assert_error(508);
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn reservation_token_together_with_even_port_is_400() {
    let mut ts = TestServer::new();
    let mut alice = ts.client(40001);
    let mut bob = ts.client_as("127.0.0.1:40002", "bob");
    let r = ts.call(&mut alice, &Req::allocate().attr(attr::EVEN_PORT, &[0x80]));
    let port = r.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port();
    let token = r.get(attr::RESERVATION_TOKEN).unwrap();
    let both = Req::allocate()
        .attr(attr::EVEN_PORT, &[0x00])
        .attr(attr::RESERVATION_TOKEN, &token);

    let refused = ts.call(&mut bob, &both);

    refused.assert_error(400);
    assert_eq!(ts.server.allocation_count(), 1);
    // The refused request did not use up the reservation.
    let ok = ts.call(
        &mut bob,
        &Req::allocate().attr(attr::RESERVATION_TOKEN, &token),
    );
    ok.assert_ok();
    assert_eq!(ok.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port(), port + 1);
}

#[test]
fn per_user_quota_is_486() {
    let mut ts = TestServer::new();
    let mut a1 = ts.client(40001);
    let mut a2 = ts.client(40002);
    let mut a3 = ts.client(40003);
    let mut bob = ts.client_as("127.0.0.1:40004", "bob");
    ts.allocate(&mut a1);
    ts.allocate(&mut a2);

    let (r, cmds) = ts.call_cmds(&mut a3, &Req::allocate());

    r.assert_error(486);
    assert!(bind_requests(&cmds).is_empty());
    assert_eq!(ts.server.allocation_count(), 2);
    ts.allocate(&mut bob);
    assert_eq!(ts.server.allocation_count(), 3);
}

#[test]
fn total_allocation_limit_is_508() {
    let mut ts = TestServer::new();
    for (port, user) in [
        (40001, "alice"),
        (40002, "alice"),
        (40003, "bob"),
        (40004, "bob"),
    ] {
        let mut c = ts.client_as(&format!("127.0.0.1:{port}"), user);
        ts.allocate(&mut c);
    }
    let mut carol = ts.client_as("127.0.0.1:40005", "carol");

    let (r, cmds) = ts.call_cmds(&mut carol, &Req::allocate());

    r.assert_error(508);
    assert!(bind_requests(&cmds).is_empty());
    assert_eq!(ts.server.allocation_count(), 4);
}

#[test]
fn exhausted_port_range_is_508_until_a_port_is_freed() {
    let mut cfg = roomy_config();
    cfg.relay.ports = 50000..=50001;
    let mut ts = TestServer::with_config(cfg);
    let mut a = ts.client(40001);
    let mut b = ts.client(40002);
    let mut c = ts.client(40003);
    let first = ts.allocate(&mut a);
    ts.allocate(&mut b);

    let (r, cmds) = ts.call_cmds(&mut c, &Req::allocate());

    r.assert_error(508);
    assert!(bind_requests(&cmds).is_empty());
    assert_eq!(ts.server.allocation_count(), 2);
    ts.call(&mut a, &Req::refresh().lifetime(0)).assert_ok();
    assert_eq!(ts.allocate(&mut c), first);
}

#[test]
fn addr_in_use_is_retried_on_another_port() {
    // Over several seeds, so that a retry which happens to avoid the busy port by chance
    // does not hide one that picks it again.
    for seed in 0..32 {
        let mut ts = TestServer::build(config(), policy(), SECRET, seed);
        ts.bind = None;
        let mut c = ts.client(40001);
        let cmds = ts.exchange(&mut c, &Req::allocate());
        let binds = bind_requests(&cmds);
        let [(token, addrs)] = &binds[..] else {
            panic!("expected one BindRelay in {cmds:?}");
        };

        ts.server
            .handle_relay_bound(*token, addrs, BindResult::AddrInUse, ts.now);
        let retry = ts.drain();

        assert!(responses(&retry).is_empty(), "no answer yet: {retry:?}");
        let binds2 = bind_requests(&retry);
        let [(token2, addrs2)] = &binds2[..] else {
            panic!("expected a second BindRelay in {retry:?}");
        };
        assert_eq!(addrs2.len(), 1);
        assert_eq!(addrs2[0].ip(), ip("127.0.0.1"));
        assert_ne!(
            addrs2, addrs,
            "seed {seed}: the port the OS reported in use is offered again"
        );
        ts.server
            .handle_relay_bound(*token2, addrs2, BindResult::Bound, ts.now);
        let r = response(&ts.drain());
        r.assert_ok();
        assert_eq!(r.xor(attr::XOR_RELAYED_ADDRESS), Some(addrs2[0]));
        assert_eq!(ts.server.allocation_count(), 1);
    }
}

#[test]
fn addr_in_use_on_every_attempt_ends_in_508() {
    let mut cfg = config();
    cfg.relay.ports = 50000..=50001;
    let mut ts = TestServer::with_config(cfg);
    ts.bind = Some(BindResult::AddrInUse);
    let mut c = ts.client(40001);

    let (r, cmds) = ts.call_cmds(&mut c, &Req::allocate());

    // Each port the OS refused stays out of the pool until the Allocate ends: two ports, two
    // attempts, then no port is left.
    r.assert_error(508);
    let binds = bind_requests(&cmds);
    assert_eq!(binds.len(), 2, "{binds:?}");
    assert_ne!(binds[0].1, binds[1].1);
    assert!(closed(&cmds).is_empty());
    assert_eq!(ts.server.allocation_count(), 0);
    ts.bind = Some(BindResult::Bound);
    ts.allocate(&mut c);
}

#[test]
fn bind_failure_is_508_and_leaves_nothing_behind() {
    let mut cfg = config();
    cfg.relay.ports = 50000..=50001;
    let mut ts = TestServer::with_config(cfg);
    ts.bind = Some(BindResult::Failed);
    let mut a = ts.client(40001);
    let mut b = ts.client(40002);

    let (r, cmds) = ts.call_cmds(&mut a, &Req::allocate());

    r.assert_error(508);
    assert!(r.msg().verify_integrity(&a.creds.key()));
    assert_eq!(bind_requests(&cmds).len(), 1);
    assert!(closed(&cmds).is_empty(), "nothing was bound: {cmds:?}");
    assert_eq!(ts.server.allocation_count(), 0);
    assert!(ts.take_events().is_empty(), "no created or ended event");
    // Neither the user's quota (2) nor the two ports leaked.
    ts.bind = Some(BindResult::Bound);
    ts.allocate(&mut a);
    ts.allocate(&mut b);
    assert_eq!(ts.server.allocation_count(), 2);
}

#[test]
fn denied_client_is_403_with_a_denied_event() {
    let mut ts = TestServer::new();
    let mut c = ts.client_as("127.0.9.1:40001", "alice");

    let (r, cmds) = ts.call_cmds(&mut c, &Req::allocate());

    r.assert_error(403);
    assert!(bind_requests(&cmds).is_empty());
    assert_eq!(ts.server.allocation_count(), 0);
    assert_eq!(
        ts.take_events(),
        vec![Event::Denied {
            id: None,
            at: ts.now.wall,
            subject: Subject::Client,
            addr: ip("127.0.9.1"),
            rule: Rule::ClientDenyList,
            facts: crate::policy::Facts::NONE,
        }]
    );
    assert_eq!(
        ts.server.stats().denials.get(&("client", "clients.deny")),
        Some(&1)
    );
}

// ---------------------------------------------------------------------------------------------
// Refresh
// ---------------------------------------------------------------------------------------------

#[test]
fn refresh_updates_the_lifetime() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.take_events();

    let r = ts.call(&mut c, &Req::refresh().lifetime(1800));

    r.assert_ok();
    assert_eq!(r.lifetime(), Some(1800));
    assert!(r.msg().verify_integrity(&c.creds.key()));
    let events = ts.take_events();
    assert!(
        matches!(&events[..], [Event::AllocationRefreshed { lifetime, .. }] if *lifetime == secs(1800)),
        "{events:?}"
    );
    assert!(closed(&ts.advance(secs(1000))).is_empty(), "outlives 600 s");
    assert_eq!(ts.server.allocation_count(), 1);
    assert!(closed(&ts.advance(secs(799))).is_empty());
    assert_eq!(closed(&ts.advance(secs(1))), vec![relayed]);
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn refresh_lifetime_follows_the_allocate_rules() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);

    let none = ts.call(&mut c, &Req::refresh());
    let long = ts.call(&mut c, &Req::refresh().lifetime(99_999));
    let short = ts.call(&mut c, &Req::refresh().lifetime(5));

    assert_eq!(none.lifetime(), Some(600));
    assert_eq!(long.lifetime(), Some(3600));
    assert_eq!(short.lifetime(), Some(600));
}

#[test]
fn refresh_with_lifetime_zero_deletes_the_allocation() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.take_events();

    let (r, cmds) = ts.call_cmds(&mut c, &Req::refresh().lifetime(0));

    r.assert_ok();
    assert_eq!(r.lifetime(), Some(0));
    assert!(r.msg().verify_integrity(&c.creds.key()));
    assert_eq!(closed(&cmds), vec![relayed]);
    let events = ts.take_events();
    assert!(
        matches!(
            &events[..],
            [Event::AllocationEnded { reason: EndReason::Released, at, .. }] if *at == ts.now.wall
        ),
        "{events:?}"
    );
    assert_eq!(ts.server.allocation_count(), 0);
    assert_eq!(
        ts.server.stats().allocations_ended.get("released"),
        Some(&1)
    );
    ts.call(&mut c, &Req::refresh()).assert_error(437);
    assert!(
        ts.peer_input(relayed, addr("127.0.0.2:9000"), b"x")
            .is_none()
    );
    // Nothing is left to expire later.
    assert!(closed(&ts.advance(secs(3600))).is_empty());
    assert!(ts.take_events().is_empty());
}

#[test]
fn refresh_without_allocation_is_437() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);

    let r = ts.call(&mut c, &Req::refresh());

    r.assert_error(437);
    assert!(r.msg().verify_integrity(&c.creds.key()));
}

#[test]
fn request_with_another_username_on_the_same_five_tuple_is_441() {
    let mut ts = TestServer::new();
    let mut alice = ts.client(40001);
    let relayed = ts.allocate(&mut alice);
    let mut bob = ts.client_as("127.0.0.1:40001", "bob");

    let refresh = ts.call(&mut bob, &Req::refresh().lifetime(0));
    let permission = ts.call(&mut bob, &Req::permission(&["127.0.0.2:1"]));
    let channel = ts.call(&mut bob, &Req::channel_bind(0x4000, "127.0.0.2:9000"));

    refresh.assert_error(441);
    permission.assert_error(441);
    channel.assert_error(441);
    assert_eq!(ts.server.allocation_count(), 1);
    assert!(
        ts.peer_input(relayed, addr("127.0.0.2:9000"), b"x")
            .is_none()
    );
    ts.call(&mut alice, &Req::refresh()).assert_ok();
}

#[test]
fn allocation_expires_after_its_lifetime() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    let created_at = ts.now.wall;
    ts.take_events();
    assert!(ts.server.poll_timeout().is_some());

    let before = ts.advance(secs(599));
    let at_expiry = ts.advance(secs(1));

    assert!(before.is_empty(), "{before:?}");
    assert_eq!(at_expiry, vec![Command::CloseRelay { addr: relayed }]);
    let events = ts.take_events();
    assert!(
        matches!(
            &events[..],
            [Event::AllocationEnded { reason: EndReason::Expired, started, .. }] if *started == created_at
        ),
        "{events:?}"
    );
    assert_eq!(ts.server.allocation_count(), 0);
    assert_eq!(ts.server.stats().allocations_ended.get("expired"), Some(&1));
    ts.call(&mut c, &Req::refresh()).assert_error(437);
}

// ---------------------------------------------------------------------------------------------
// CreatePermission
// ---------------------------------------------------------------------------------------------

#[test]
fn create_permission_lets_the_peer_through() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.take_events();
    assert!(
        ts.peer_input(relayed, addr("127.0.0.2:9000"), b"x")
            .is_none()
    );

    let r = ts.call(&mut c, &Req::permission(&["127.0.0.2:1"]));

    r.assert_ok();
    assert!(r.msg().verify_integrity(&c.creds.key()));
    let events = ts.take_events();
    assert!(
        matches!(
            &events[..],
            [Event::PermissionAllowed { peer, rule: Rule::UnknownAllowed, .. }] if *peer == ip("127.0.0.2")
        ),
        "{events:?}"
    );
    // The port of XOR-PEER-ADDRESS is ignored: any port of that IP may send.
    assert!(
        ts.peer_input(relayed, addr("127.0.0.2:9000"), b"x")
            .is_some()
    );
    assert!(
        ts.peer_input(relayed, addr("127.0.0.3:9000"), b"x")
            .is_none()
    );
}

#[test]
fn create_permission_with_a_denied_peer_is_403_and_installs_none() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.take_events();

    let r = ts.call(
        &mut c,
        &Req::permission(&["127.0.0.2:9000", "127.0.5.1:9000", "127.0.0.3:9000"]),
    );

    r.assert_error(403);
    let events = ts.take_events();
    assert!(
        matches!(
            &events[..],
            [Event::Denied { id: Some(_), subject: Subject::Peer, addr, rule: Rule::PeerDenyList, .. }]
                if *addr == ip("127.0.5.1")
        ),
        "{events:?}"
    );
    for peer in ["127.0.0.2:9000", "127.0.5.1:9000", "127.0.0.3:9000"] {
        assert!(ts.peer_input(relayed, addr(peer), b"x").is_none(), "{peer}");
        let send = ts.send_indication(peer, b"x");
        assert!(ts.client_input(&c, &send).is_none(), "{peer}");
    }
    assert_eq!(
        ts.server.stats().denials.get(&("peer", "peers.deny")),
        Some(&1)
    );
}

#[test]
fn special_purpose_peers_are_403() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.take_events();
    let cases = [
        ("10.0.0.1:9000", "10.0.0.1", "private"),
        ("169.254.169.254:80", "169.254.169.254", "link-local"),
        ("[::ffff:10.0.0.1]:9000", "10.0.0.1", "private"),
        ("0.0.0.0:9000", "0.0.0.0", ""),
    ];

    for (peer, canonical, range) in cases {
        let r = ts.call(&mut c, &Req::permission(&[peer]));

        r.assert_error(403);
        let events = ts.take_events();
        let [
            Event::Denied {
                subject,
                addr: denied,
                rule,
                ..
            },
        ] = &events[..]
        else {
            panic!("{peer}: {events:?}");
        };
        assert_eq!(*subject, Subject::Peer);
        assert_eq!(*denied, ip(canonical));
        match rule {
            Rule::SpecialPurpose(name) => assert_eq!(*name, range, "{peer}"),
            Rule::Unspecified => assert_eq!(range, "", "{peer}"),
            other => panic!("{peer}: decided by {other:?}"),
        }
        assert!(ts.peer_input(relayed, addr(peer), b"x").is_none());
    }
}

#[test]
fn ipv6_peer_on_an_ipv4_allocation_is_443() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);

    let r = ts.call(&mut c, &Req::permission(&["[2a00:1450:4001::1]:9000"]));

    r.assert_error(443);
    assert!(
        ts.take_events()
            .iter()
            .all(|e| !matches!(e, Event::PermissionAllowed { .. }))
    );
}

#[test]
fn create_permission_without_a_peer_is_400() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);

    let r = ts.call(&mut c, &Req::new(Method::CREATE_PERMISSION));

    r.assert_error(400);
}

#[test]
fn more_permissions_than_the_limit_is_508() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.permit(&mut c, &["127.0.0.2:1", "127.0.0.3:1", "127.0.0.4:1"]); // the limit is 3

    let one_more = ts.call(&mut c, &Req::permission(&["127.0.0.5:1"]));
    let mixed = ts.call(&mut c, &Req::permission(&["127.0.0.2:1", "127.0.0.6:1"]));
    let refresh = ts.call(&mut c, &Req::permission(&["127.0.0.2:1", "127.0.0.4:1"]));

    one_more.assert_error(508);
    mixed.assert_error(508);
    refresh.assert_ok();
    assert!(ts.peer_input(relayed, addr("127.0.0.5:1"), b"x").is_none());
    assert!(ts.peer_input(relayed, addr("127.0.0.6:1"), b"x").is_none());
    assert!(ts.peer_input(relayed, addr("127.0.0.3:1"), b"x").is_some());
}

#[test]
fn permission_expires_after_300_seconds() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.permit(&mut c, &["127.0.0.2:1"]);

    ts.advance(secs(299));
    let peer_before = ts.peer_input(relayed, addr("127.0.0.2:9000"), b"in");
    let send = ts.send_indication("127.0.0.2:9000", b"out");
    let client_before = ts.client_input(&c, &send);
    ts.advance(secs(1));
    let peer_after = ts.peer_input(relayed, addr("127.0.0.2:9000"), b"in");
    let send = ts.send_indication("127.0.0.2:9000", b"out");
    let client_after = ts.client_input(&c, &send);

    assert!(peer_before.is_some());
    assert!(client_before.is_some());
    assert!(peer_after.is_none());
    assert!(client_after.is_none());
    assert_eq!(ts.server.stats().dropped.get("no-permission"), Some(&2));
    assert_eq!(ts.server.allocation_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// ChannelBind
// ---------------------------------------------------------------------------------------------

#[test]
fn channel_bind_succeeds() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.take_events();

    let r = ts.call(&mut c, &Req::channel_bind(0x4000, "127.0.0.2:9000"));

    r.assert_ok();
    assert!(r.msg().verify_integrity(&c.creds.key()));
    let events = ts.take_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::ChannelBound { channel: 0x4000, peer, .. } if *peer == addr("127.0.0.2:9000")
        )),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::PermissionAllowed { peer, .. } if *peer == ip("127.0.0.2")
        )),
        "{events:?}"
    );
    let t = ts.client_input(&c, &channel_data(0x4000, b"ping")).unwrap();
    assert_eq!((t.relay, t.peer), (relayed, addr("127.0.0.2:9000")));
}

#[test]
fn channel_number_out_of_range_is_400() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);

    for number in [0x0000, 0x3FFF, 0x8000, 0xFFFF] {
        let r = ts.call(&mut c, &Req::channel_bind(number, "127.0.0.2:9000"));
        r.assert_error(400);
    }
    assert!(
        ts.take_events()
            .iter()
            .all(|e| !matches!(e, Event::ChannelBound { .. }))
    );
    // Nothing was installed: the peer has no permission either.
    let send = ts.send_indication("127.0.0.2:9000", b"x");
    assert!(ts.client_input(&c, &send).is_none());
}

#[test]
fn channel_number_bound_to_another_peer_is_400() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");

    let r = ts.call(&mut c, &Req::channel_bind(0x4000, "127.0.0.3:9000"));

    r.assert_error(400);
    let t = ts.client_input(&c, &channel_data(0x4000, b"x")).unwrap();
    assert_eq!(t.peer, addr("127.0.0.2:9000"));
}

#[test]
fn peer_bound_to_another_channel_is_400() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");

    let r = ts.call(&mut c, &Req::channel_bind(0x4001, "127.0.0.2:9000"));

    r.assert_error(400);
    assert!(ts.client_input(&c, &channel_data(0x4001, b"x")).is_none());
}

#[test]
fn rebinding_the_same_pair_refreshes_the_channel() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.call(&mut c, &Req::allocate().lifetime(3600)).assert_ok();
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    ts.bind_channel(&mut c, 0x4001, "127.0.0.3:9000");
    ts.take_events();

    ts.advance(secs(500));
    let rebound = ts.call(&mut c, &Req::channel_bind(0x4000, "127.0.0.2:9000"));
    ts.permit(&mut c, &["127.0.0.3:1"]); // keeps the other peer's permission, not its channel
    let events = ts.take_events();
    ts.advance(secs(200));
    let refreshed = ts.client_input(&c, &channel_data(0x4000, b"x"));
    let lapsed = ts.client_input(&c, &channel_data(0x4001, b"x"));

    rebound.assert_ok();
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, Event::ChannelBound { .. })),
        "a refresh is not a new binding: {events:?}"
    );
    assert_eq!(refreshed.unwrap().peer, addr("127.0.0.2:9000"));
    assert!(lapsed.is_none());
    assert_eq!(ts.server.stats().dropped.get("no-channel"), Some(&1));
}

#[test]
fn channel_bind_to_a_denied_peer_is_403() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.take_events();

    let r = ts.call(&mut c, &Req::channel_bind(0x4000, "127.0.5.1:9000"));

    r.assert_error(403);
    let events = ts.take_events();
    assert!(
        matches!(
            &events[..],
            [Event::Denied { subject: Subject::Peer, rule: Rule::PeerDenyList, addr, .. }]
                if *addr == ip("127.0.5.1")
        ),
        "{events:?}"
    );
    assert!(ts.client_input(&c, &channel_data(0x4000, b"x")).is_none());
    assert!(
        ts.peer_input(relayed, addr("127.0.5.1:9000"), b"x")
            .is_none()
    );
}

#[test]
fn expired_channel_cools_down_for_300_seconds() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.call(&mut c, &Req::allocate().lifetime(3600)).assert_ok();
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");

    ts.advance(secs(600));
    let expired = ts.client_input(&c, &channel_data(0x4000, b"x"));
    let number_to_other_peer = ts.call(&mut c, &Req::channel_bind(0x4000, "127.0.0.3:9000"));
    let peer_to_other_number = ts.call(&mut c, &Req::channel_bind(0x4001, "127.0.0.2:9000"));
    ts.advance(secs(299));
    let still_cooling = ts.call(&mut c, &Req::channel_bind(0x4000, "127.0.0.3:9000"));
    ts.advance(secs(1));
    let free_number = ts.call(&mut c, &Req::channel_bind(0x4000, "127.0.0.3:9000"));
    let free_peer = ts.call(&mut c, &Req::channel_bind(0x4001, "127.0.0.2:9000"));

    assert!(expired.is_none());
    number_to_other_peer.assert_error(400);
    peer_to_other_number.assert_error(400);
    still_cooling.assert_error(400);
    free_number.assert_ok();
    free_peer.assert_ok();
    let t = ts.client_input(&c, &channel_data(0x4000, b"x")).unwrap();
    assert_eq!(t.peer, addr("127.0.0.3:9000"));
}

// ---------------------------------------------------------------------------------------------
// Data path
// ---------------------------------------------------------------------------------------------

#[test]
fn channel_data_is_relayed_as_a_range_of_the_datagram() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    let datagram = channel_data(0x4000, b"hello"); // padded to 12 bytes

    let t = ts.client_input(&c, &datagram).expect("relayed");

    assert_eq!(datagram.len(), 12);
    assert_eq!(t.relay, relayed);
    assert_eq!(t.peer, addr("127.0.0.2:9000"));
    assert_eq!(t.range, 4..9);
    assert_eq!(&datagram[t.range], b"hello");
}

#[test]
fn channel_data_without_a_channel_is_dropped() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    let stranger = ts.client(40002);

    let unbound = ts.client_input(&c, &channel_data(0x4001, b"x"));
    let no_allocation = ts.client_input(&stranger, &channel_data(0x4000, b"x"));

    assert!(unbound.is_none());
    assert!(no_allocation.is_none());
    assert_eq!(ts.server.stats().dropped.get("no-channel"), Some(&1));
    assert_eq!(ts.server.stats().dropped.get("no-allocation"), Some(&1));
    assert_eq!(ts.server.stats().packets_to_peer, 0);
}

#[test]
fn send_indication_with_a_permission_is_relayed_as_the_data_range() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.permit(&mut c, &["127.0.0.2:1"]);
    let send = ts.send_indication("127.0.0.2:9000", b"odd");

    let t = ts.client_input(&c, &send).expect("relayed");

    assert_eq!(t.relay, relayed);
    assert_eq!(t.peer, addr("127.0.0.2:9000"));
    assert_eq!(&send[t.range], b"odd");
}

#[test]
fn send_indication_without_a_permission_is_dropped() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    ts.permit(&mut c, &["127.0.0.2:1"]);
    let send = ts.send_indication("127.0.0.3:9000", b"x");

    let t = ts.client_input(&c, &send);

    assert!(t.is_none());
    assert_eq!(ts.server.stats().dropped.get("no-permission"), Some(&1));
    assert_eq!(ts.server.stats().packets_to_peer, 0);
}

#[test]
fn peer_data_on_a_channel_is_framed_as_channel_data() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");

    let (to, framed) = ts
        .peer_input(relayed, addr("127.0.0.2:9000"), b"pong!")
        .expect("relayed");

    assert_eq!(to, c.five_tuple);
    assert_eq!(framed.len(), 4 + 5);
    let cd = ChannelData::parse(&framed).unwrap();
    assert_eq!(cd.channel, 0x4000);
    assert_eq!(cd.data, b"pong!");
}

#[test]
fn peer_data_with_only_a_permission_is_framed_as_a_data_indication() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.permit(&mut c, &["127.0.0.2:1"]);
    // A channel to another port of the same IP does not make this peer a channel peer.
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9001");
    let peer = addr("127.0.0.2:9000");

    for len in 1..=9u8 {
        let payload: Vec<u8> = (1..=len).collect();

        let (to, framed) = ts.peer_input(relayed, peer, &payload).expect("relayed");

        assert_eq!(to, c.five_tuple);
        assert_eq!(framed.len() % 4, 0, "len {len}");
        let m = Message::parse(&framed).expect("a well-formed Data indication");
        assert_eq!(m.class(), Class::Indication);
        assert_eq!(m.method(), Method::DATA);
        let tid = m.transaction_id();
        let from = attr::decode_xor_address(
            attr::XOR_PEER_ADDRESS,
            m.get(attr::XOR_PEER_ADDRESS).unwrap(),
            &tid,
        );
        assert_eq!(from, Ok(peer));
        assert_eq!(m.get(attr::DATA), Some(&payload[..]));
        let data_end = m.value_range(attr::DATA).unwrap().end;
        assert!(
            framed[data_end..].iter().all(|&b| b == 0),
            "padding is zeroed: {:?}",
            &framed[data_end..]
        );
    }
}

#[test]
fn peer_data_from_an_ipv6_peer_is_a_data_indication_from_the_ipv6_relay() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let r = ts.call(
        &mut c,
        &Req::allocate().attr(attr::ADDITIONAL_ADDRESS_FAMILY, &FAMILY_V6),
    );
    let relayed = r.xors(attr::XOR_RELAYED_ADDRESS);
    let relay6 = relayed[1];
    let peer = addr("[2a00:1450:4001::1]:7000");
    ts.permit(&mut c, &["[2a00:1450:4001::1]:1"]);

    let (to, framed) = ts.peer_input(relay6, peer, b"v6 odd").expect("relayed");
    let send = ts.send_indication("[2a00:1450:4001::1]:7000", b"back");
    let out = ts.client_input(&c, &send).expect("relayed");

    assert_eq!(to, c.five_tuple);
    let m = Message::parse(&framed).unwrap();
    assert_eq!(m.method(), Method::DATA);
    let tid = m.transaction_id();
    let from = attr::decode_xor_address(
        attr::XOR_PEER_ADDRESS,
        m.get(attr::XOR_PEER_ADDRESS).unwrap(),
        &tid,
    );
    assert_eq!(from, Ok(peer));
    assert_eq!(m.get(attr::DATA), Some(&b"v6 odd"[..]));
    assert_eq!(out.relay, relay6);
    assert_eq!(out.peer, peer);
    assert_eq!(&send[out.range], b"back");
}

#[test]
fn peer_data_without_a_permission_is_dropped() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.permit(&mut c, &["127.0.0.2:1"]);

    let stranger = ts.peer_input(relayed, addr("127.0.0.3:9000"), b"x");
    let wrong_relay = ts.peer_input(addr("127.0.0.1:1"), addr("127.0.0.2:9000"), b"x");

    assert!(stranger.is_none());
    assert!(wrong_relay.is_none());
    assert_eq!(ts.server.stats().dropped.get("no-permission"), Some(&1));
    assert_eq!(ts.server.stats().dropped.get("no-allocation"), Some(&1));
    assert_eq!(ts.server.stats().packets_to_client, 0);
}

#[test]
fn traffic_is_counted_in_stats_and_in_the_ended_event() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    ts.permit(&mut c, &["127.0.0.3:1"]);
    let send = ts.send_indication("127.0.0.3:7000", &[2; 7]);

    assert!(
        ts.client_input(&c, &channel_data(0x4000, &[1; 10]))
            .is_some()
    );
    assert!(ts.client_input(&c, &send).is_some());
    assert!(
        ts.client_input(&c, &channel_data(0x4001, &[3; 100]))
            .is_none()
    );
    assert!(
        ts.peer_input(relayed, addr("127.0.0.2:9000"), &[4; 5])
            .is_some()
    );
    assert!(
        ts.peer_input(relayed, addr("127.0.0.3:7000"), &[5; 3])
            .is_some()
    );
    assert!(
        ts.peer_input(relayed, addr("127.0.0.9:7000"), &[6; 50])
            .is_none()
    );
    ts.take_events();
    ts.call(&mut c, &Req::refresh().lifetime(0)).assert_ok();

    let expected = TrafficCounters {
        packets_to_peer: 2,
        bytes_to_peer: 17,
        packets_to_client: 2,
        bytes_to_client: 8,
    };
    let s = ts.server.stats();
    assert_eq!(
        (
            s.packets_to_peer,
            s.bytes_to_peer,
            s.packets_to_client,
            s.bytes_to_client
        ),
        (2, 17, 2, 8)
    );
    let events = ts.take_events();
    assert!(
        matches!(&events[..], [Event::AllocationEnded { traffic, .. }] if *traffic == expected),
        "{events:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------------------

#[test]
fn same_seed_and_inputs_give_byte_identical_output() {
    let first = scripted_run(SEED);
    let second = scripted_run(SEED);
    let other_seed = scripted_run(SEED + 1);

    assert!(first.0.len() > 10, "the script produced commands");
    assert_eq!(first, second);
    assert_ne!(first, other_seed, "the RNG is actually used");
}

/// One run through most paths; returns every command, every event and every framed peer
/// datagram.
fn scripted_run(seed: u64) -> (Vec<Command>, Vec<Event>, Vec<Vec<u8>>) {
    let mut ts = TestServer::build(config(), policy(), SECRET, seed);
    let mut frames = Vec::new();
    let mut alice = ts.client(40001);
    let mut bob = ts.client_as("127.0.0.1:40002", "bob");
    let r = ts.call(&mut alice, &Req::allocate().attr(attr::EVEN_PORT, &[0x80]));
    let relayed = r.xor(attr::XOR_RELAYED_ADDRESS).unwrap();
    let token = r.get(attr::RESERVATION_TOKEN).unwrap();
    ts.call(
        &mut bob,
        &Req::allocate().attr(attr::RESERVATION_TOKEN, &token),
    );
    ts.permit(&mut alice, &["127.0.0.2:1", "127.0.0.3:1"]);
    ts.bind_channel(&mut alice, 0x4000, "127.0.0.2:9000");
    ts.call(&mut alice, &Req::permission(&["127.0.5.1:1"]));
    for (peer, payload) in [("127.0.0.2:9000", &b"chan"[..]), ("127.0.0.3:9000", b"ind")] {
        frames.push(ts.peer_input(relayed, addr(peer), payload).unwrap().1);
    }
    ts.advance(secs(301));
    ts.call(&mut alice, &Req::refresh().lifetime(0));
    ts.advance(secs(700));
    let now = ts.now;
    ts.server.shutdown(now);
    ts.drain();
    (ts.log, ts.events, frames)
}

// ---------------------------------------------------------------------------------------------
// Resource leaks on reservation paths
// ---------------------------------------------------------------------------------------------

/// A datagram can arrive after a reservation's deadline but before the shell calls
/// `handle_timeout`. The expired token must be refused without losing the reserved port.
#[test]
fn expired_reservation_token_does_not_leak_the_reserved_port() {
    let mut cfg = roomy_config();
    cfg.relay.ports = 50000..=50001;
    let mut ts = TestServer::with_config(cfg);
    let mut alice = ts.client(40001);
    let mut bob = ts.client(40002);
    let mut carol = ts.client(40003);
    let r = ts.call(&mut alice, &Req::allocate().attr(attr::EVEN_PORT, &[0x80]));
    let token = r.get(attr::RESERVATION_TOKEN).unwrap();

    // The reservation (30 s) runs out, and the token arrives before the timer is handled.
    ts.now.mono += secs(31);
    ts.now.wall += secs(31);
    let late = ts.call(
        &mut bob,
        &Req::allocate().attr(attr::RESERVATION_TOKEN, &token),
    );
    ts.advance(secs(0));
    ts.call(&mut alice, &Req::refresh().lifetime(0)).assert_ok();

    late.assert_error(508);
    // Both ports of the range are free again.
    ts.allocate(&mut bob);
    ts.allocate(&mut carol);
}

/// A token-holder's Allocate that fails after the token was taken (here: a malformed
/// LIFETIME) must not lose the reserved port.
#[test]
fn failed_allocate_with_a_reservation_token_does_not_leak_the_reserved_port() {
    let mut cfg = roomy_config();
    cfg.relay.ports = 50000..=50001;
    let mut ts = TestServer::with_config(cfg);
    let mut alice = ts.client(40001);
    let mut bob = ts.client(40002);
    let mut carol = ts.client(40003);
    let r = ts.call(&mut alice, &Req::allocate().attr(attr::EVEN_PORT, &[0x80]));
    let token = r.get(attr::RESERVATION_TOKEN).unwrap();
    let bad = Req::allocate()
        .attr(attr::RESERVATION_TOKEN, &token)
        .attr(attr::LIFETIME, &[0, 0, 1]);

    let refused = ts.call(&mut bob, &bad);
    ts.advance(secs(31)); // the reservation would have run out by now anyway
    ts.call(&mut alice, &Req::refresh().lifetime(0)).assert_ok();

    refused.assert_error(400);
    ts.allocate(&mut bob);
    ts.allocate(&mut carol);
}

// =============================================================================================
// Harness
// =============================================================================================

const REALM: &str = "eeaturn.test";
const SECRET: &str = "current-secret-0123456789";
const OLD_SECRET: &str = "previous-secret-0123456789";
const WALL_START: u64 = 1_700_000_000;
const SEED: u64 = 7;
const NONCE_KEY: [u8; 32] = [0x5a; 32];
const PORTS: RangeInclusive<u16> = 50000..=50019;
/// What the server offers in PASSWORD-ALGORITHMS: SHA-256, then MD5.
const PASSWORD_ALGORITHMS_OFFER: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];
const UDP: [u8; 4] = [attr::TRANSPORT_UDP, 0, 0, 0];
const FAMILY_V6: [u8; 4] = [attr::FAMILY_IPV6, 0, 0, 0];

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn five_tuple(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: addr(client),
        server: addr("127.0.0.1:3478"),
    }
}

/// Relays on 127.0.0.1 and ::1, ports 50000-50019; at most 4 allocations, 2 per user,
/// 3 permissions and 2 channels per allocation; lifetimes 600 s default, 3600 s max.
fn config() -> ServerConfig {
    ServerConfig {
        realm: REALM.to_owned(),
        software: Some("eeaturn-test".to_owned()),
        relay: RelayAddresses {
            v4: Some(ip("127.0.0.1")),
            v6: Some(ip("::1")),
            external_v4: None,
            external_v6: None,
            ports: PORTS,
        },
        limits: Limits {
            max_allocations: 4,
            max_allocations_per_user: 2,
            max_permissions_per_allocation: 3,
            max_channels_per_allocation: 2,
            default_lifetime: secs(600),
            max_lifetime: secs(3600),
        },
        nonce_lifetime: secs(600),
        max_credential_ttl: secs(86_400),
    }
}

/// [`config`] with allocation quotas out of the way.
fn roomy_config() -> ServerConfig {
    let mut cfg = config();
    cfg.limits.max_allocations = 10;
    cfg.limits.max_allocations_per_user = 10;
    cfg
}

/// Loopback peers allowed (127.0.0.0/8, ::1) except 127.0.5.0/24; clients in 127.0.9.0/24
/// refused.
fn policy() -> Policy {
    Policy::dangerous_without_geo(
        vec!["127.0.5.0/24".parse().unwrap()],
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        vec!["127.0.9.0/24".parse().unwrap()],
    )
}

/// A server plus the clock, the secrets clients get credentials from, and everything it said.
struct TestServer {
    server: Server<SmallRng>,
    now: Now,
    /// Issues client credentials (the first secret signs).
    secrets: Secrets,
    /// How [`Command::BindRelay`] is completed automatically; `None` leaves it to the test.
    bind: Option<BindResult>,
    /// Events not yet taken by the test.
    events: Vec<Event>,
    /// Every command the server produced, in order.
    log: Vec<Command>,
    tids: u64,
}

impl TestServer {
    fn new() -> Self {
        Self::with_config(config())
    }

    fn with_config(cfg: ServerConfig) -> Self {
        Self::build(cfg, policy(), SECRET, SEED)
    }

    fn build(cfg: ServerConfig, policy: Policy, secrets: &str, seed: u64) -> Self {
        let secrets = Secrets::parse(secrets).expect("test secrets parse");
        let server = Server::new(
            cfg,
            secrets.clone(),
            policy,
            NONCE_KEY,
            SmallRng::seed_from_u64(seed),
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "an arbitrary origin for the test clock"
        )]
        let mono = Instant::now();
        Self {
            server,
            now: Now {
                mono,
                wall: UNIX_EPOCH + secs(WALL_START),
            },
            secrets,
            bind: Some(BindResult::Bound),
            events: Vec::new(),
            log: Vec::new(),
            tids: 0,
        }
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tids += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(b"test");
        t[4..].copy_from_slice(&self.tids.to_be_bytes());
        TransactionId(t)
    }

    /// A client of user "alice" at 127.0.0.1:`port` with a one-hour REST credential.
    fn client(&self, port: u16) -> Client {
        self.client_as(&format!("127.0.0.1:{port}"), "alice")
    }

    /// A client of `user` at `from` with a one-hour REST credential.
    fn client_as(&self, from: &str, user: &str) -> Client {
        let cred = self
            .secrets
            .issue(user, secs(3600), secs(86_400), self.now.wall)
            .unwrap();
        Client {
            five_tuple: five_tuple(from),
            creds: Creds {
                username: cred.username,
                password: cred.password,
                realm: REALM.to_owned(),
                sha256: false,
            },
            nonce: None,
        }
    }

    /// A client at `from` with any `username`, its password signed by the first of `secrets`.
    fn client_with(&self, from: &str, username: &str, secrets: &Secrets) -> Client {
        Client {
            five_tuple: five_tuple(from),
            creds: Creds {
                username: username.to_owned(),
                password: secrets.passwords(username).next().unwrap(),
                realm: REALM.to_owned(),
                sha256: false,
            },
            nonce: None,
        }
    }

    /// Feeds a request datagram and returns the commands it caused (relay binds completed per
    /// `self.bind`).
    #[track_caller]
    fn send(&mut self, from: FiveTuple, bytes: &[u8]) -> Vec<Command> {
        let relayed = self.server.handle_client_input(from, bytes, self.now);
        assert_eq!(relayed, None, "a request is answered, never relayed");
        let cmds = self.drain();
        for cmd in &cmds {
            if let Command::SendToClient { to, .. } = cmd {
                assert_eq!(*to, from, "responses go back to the requester");
            }
        }
        cmds
    }

    /// Drains commands (completing relay binds per `self.bind`) and events.
    fn drain(&mut self) -> Vec<Command> {
        let mut cmds = Vec::new();
        while let Some(cmd) = self.server.poll_command() {
            if let (Command::BindRelay { token, addrs, .. }, Some(result)) = (&cmd, self.bind) {
                self.server
                    .handle_relay_bound(*token, addrs, result, self.now);
            }
            cmds.push(cmd);
        }
        while let Some(e) = self.server.poll_event() {
            self.events.push(e);
        }
        self.log.extend(cmds.iter().cloned());
        cmds
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Sends `req` without credentials and returns the one response.
    #[track_caller]
    fn unauthenticated(&mut self, from: FiveTuple, req: &Req) -> Resp {
        let tid = req.tid.unwrap_or_else(|| self.next_tid());
        response(&self.send(from, &req.encode(tid, None)))
    }

    /// Gets a nonce the way a client does: an unauthenticated request answered with 401.
    #[track_caller]
    fn fetch_nonce(&mut self, c: &mut Client, method: Method) -> Resp {
        let r = self.unauthenticated(c.five_tuple, &Req::new(method));
        r.assert_error(401);
        c.nonce = Some(r.nonce().expect("a 401 carries NONCE"));
        r
    }

    /// One authenticated attempt (fetching a nonce first if the client has none).
    fn exchange(&mut self, c: &mut Client, req: &Req) -> Vec<Command> {
        if c.nonce.is_none() {
            self.fetch_nonce(c, req.method);
        }
        let tid = req.tid.unwrap_or_else(|| self.next_tid());
        let bytes = req.encode(tid, Some(&c.auth()));
        self.send(c.five_tuple, &bytes)
    }

    /// An authenticated request as a client makes it: retried once with the fresh nonce of a
    /// 438. Returns the final response and the commands of the final attempt.
    #[track_caller]
    fn call_cmds(&mut self, c: &mut Client, req: &Req) -> (Resp, Vec<Command>) {
        let cmds = self.exchange(c, req);
        let r = response(&cmds);
        if r.code() == Some(438) {
            c.nonce = Some(r.nonce().expect("a 438 carries NONCE"));
            let cmds = self.exchange(c, req);
            return (response(&cmds), cmds);
        }
        (r, cmds)
    }

    #[track_caller]
    fn call(&mut self, c: &mut Client, req: &Req) -> Resp {
        self.call_cmds(c, req).0
    }

    /// Allocates and returns the (IPv4) relayed address.
    #[track_caller]
    fn allocate(&mut self, c: &mut Client) -> SocketAddr {
        let r = self.call(c, &Req::allocate());
        r.assert_ok();
        r.xor(attr::XOR_RELAYED_ADDRESS).unwrap()
    }

    #[track_caller]
    fn permit(&mut self, c: &mut Client, peers: &[&str]) {
        self.call(c, &Req::permission(peers)).assert_ok();
    }

    #[track_caller]
    fn bind_channel(&mut self, c: &mut Client, number: u16, peer: &str) {
        self.call(c, &Req::channel_bind(number, peer)).assert_ok();
    }

    /// Moves both clocks forward and handles the timeout; returns the resulting commands.
    fn advance(&mut self, d: Duration) -> Vec<Command> {
        self.now.mono += d;
        self.now.wall += d;
        self.server.handle_timeout(self.now);
        self.drain()
    }

    /// A Send indication to `peer` carrying `data`.
    fn send_indication(&mut self, peer: &str, data: &[u8]) -> Vec<u8> {
        let tid = self.next_tid();
        let mut req = Req::new(Method::SEND).peer(peer).attr(attr::DATA, data);
        req.class = Class::Indication;
        req.encode(tid, None)
    }

    /// Feeds a client's ChannelData or Send indication; the data path never makes commands.
    #[track_caller]
    fn client_input(&mut self, c: &Client, bytes: &[u8]) -> Option<PeerTransmit> {
        let out = self
            .server
            .handle_client_input(c.five_tuple, bytes, self.now);
        let cmds = self.drain();
        assert!(cmds.is_empty(), "{cmds:?}");
        out
    }

    /// Feeds a peer datagram into a buffer with the required head- and tailroom (filled with
    /// junk) and returns the destination and the framed bytes.
    #[track_caller]
    fn peer_input(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Option<(FiveTuple, Vec<u8>)> {
        let mut buf = vec![0xEE; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
        buf[range.clone()].copy_from_slice(payload);
        let out = self
            .server
            .handle_peer_input(relay, peer, &mut buf, range, self.now);
        let cmds = self.drain();
        assert!(cmds.is_empty(), "{cmds:?}");
        out.map(|t| (t.to, buf[t.range].to_vec()))
    }
}

/// A client's credentials.
#[derive(Debug, Clone)]
struct Creds {
    username: String,
    password: String,
    realm: String,
    /// Use PASSWORD-ALGORITHM SHA-256 and MESSAGE-INTEGRITY-SHA256.
    sha256: bool,
}

impl Creds {
    fn key(&self) -> Vec<u8> {
        if self.sha256 {
            long_term_key_sha256(&self.username, &self.realm, &self.password).to_vec()
        } else {
            long_term_key_md5(&self.username, &self.realm, &self.password).to_vec()
        }
    }
}

#[derive(Debug, Clone)]
struct Client {
    five_tuple: FiveTuple,
    creds: Creds,
    nonce: Option<String>,
}

impl Client {
    /// The authentication attributes a well-behaved client sends.
    fn auth(&self) -> Auth {
        let sha = self.creds.sha256;
        Auth {
            username: self.creds.username.clone(),
            realm: self.creds.realm.clone(),
            nonce: self.nonce.clone(),
            algorithms: sha.then(|| PASSWORD_ALGORITHMS_OFFER.to_vec()),
            algorithm: sha.then_some(attr::PASSWORD_ALGORITHM_SHA256),
            key: self.creds.key(),
            sha256_integrity: sha,
        }
    }
}

/// The authentication part of a request, field by field, so tests can break any of it.
#[derive(Debug, Clone)]
struct Auth {
    username: String,
    realm: String,
    nonce: Option<String>,
    algorithms: Option<Vec<u8>>,
    algorithm: Option<u16>,
    key: Vec<u8>,
    sha256_integrity: bool,
}

/// A request or indication before encoding.
#[derive(Debug, Clone)]
struct Req {
    method: Method,
    class: Class,
    /// Fixed transaction id (for retransmissions); a fresh one per send otherwise.
    tid: Option<TransactionId>,
    attrs: Vec<ReqAttr>,
}

#[derive(Debug, Clone)]
enum ReqAttr {
    Raw(u16, Vec<u8>),
    Xor(u16, SocketAddr),
}

impl Req {
    fn new(method: Method) -> Self {
        Self {
            method,
            class: Class::Request,
            tid: None,
            attrs: Vec::new(),
        }
    }

    /// Allocate for UDP.
    fn allocate() -> Self {
        Self::new(Method::ALLOCATE).attr(attr::REQUESTED_TRANSPORT, &UDP)
    }

    fn refresh() -> Self {
        Self::new(Method::REFRESH)
    }

    fn permission(peers: &[&str]) -> Self {
        peers
            .iter()
            .fold(Self::new(Method::CREATE_PERMISSION), |r, p| r.peer(p))
    }

    fn channel_bind(number: u16, peer: &str) -> Self {
        let n = number.to_be_bytes();
        Self::new(Method::CHANNEL_BIND)
            .attr(attr::CHANNEL_NUMBER, &[n[0], n[1], 0, 0])
            .peer(peer)
    }

    fn attr(mut self, ty: u16, value: &[u8]) -> Self {
        self.attrs.push(ReqAttr::Raw(ty, value.to_vec()));
        self
    }

    fn peer(mut self, peer: &str) -> Self {
        self.attrs
            .push(ReqAttr::Xor(attr::XOR_PEER_ADDRESS, addr(peer)));
        self
    }

    fn lifetime(self, secs: u32) -> Self {
        self.attr(attr::LIFETIME, &secs.to_be_bytes())
    }

    fn tid(mut self, tid: TransactionId) -> Self {
        self.tid = Some(tid);
        self
    }

    /// Encodes with `tid`: attributes, then USERNAME, REALM, NONCE, PASSWORD-ALGORITHMS,
    /// PASSWORD-ALGORITHM and the integrity attribute per `auth`, then FINGERPRINT.
    fn encode(&self, tid: TransactionId, auth: Option<&Auth>) -> Vec<u8> {
        let mut b = MessageBuilder::new(MessageType::new(self.method, self.class), tid);
        for a in &self.attrs {
            match a {
                ReqAttr::Raw(ty, v) => b.add_raw(*ty, v),
                ReqAttr::Xor(ty, addr) => b.add_xor_address(*ty, *addr),
            }
        }
        if let Some(a) = auth {
            b.add_raw(attr::USERNAME, a.username.as_bytes());
            b.add_raw(attr::REALM, a.realm.as_bytes());
            if let Some(nonce) = &a.nonce {
                b.add_raw(attr::NONCE, nonce.as_bytes());
            }
            if let Some(v) = &a.algorithms {
                b.add_raw(attr::PASSWORD_ALGORITHMS, v);
            }
            if let Some(alg) = a.algorithm {
                let v = alg.to_be_bytes();
                b.add_raw(attr::PASSWORD_ALGORITHM, &[v[0], v[1], 0, 0]);
            }
            if a.sha256_integrity {
                b.add_message_integrity_sha256(&a.key);
            } else {
                b.add_message_integrity(&a.key);
            }
        }
        b.add_fingerprint();
        b.finish()
    }
}

/// ChannelData on `number`, padded to a multiple of four as over a stream.
fn channel_data(number: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap();
    let mut v = Vec::with_capacity(4 + payload.len() + 3);
    v.extend_from_slice(&number.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(payload);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// A response the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp(Vec<u8>);

impl Resp {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("the server's messages parse (incl. FINGERPRINT)")
    }

    fn class(&self) -> Class {
        self.msg().class()
    }

    fn error(&self) -> Option<(u16, String)> {
        let v = self.msg().get(attr::ERROR_CODE)?;
        let (code, reason) = attr::decode_error_code(v).expect("ERROR-CODE decodes");
        Some((code, reason.to_owned()))
    }

    fn code(&self) -> Option<u16> {
        self.error().map(|e| e.0)
    }

    fn get(&self, ty: u16) -> Option<Vec<u8>> {
        self.msg().get(ty).map(<[u8]>::to_vec)
    }

    fn xors(&self, ty: u16) -> Vec<SocketAddr> {
        let m = self.msg();
        let tid = m.transaction_id();
        m.attributes()
            .filter(|(t, _)| *t == ty)
            .map(|(_, v)| attr::decode_xor_address(ty, v, &tid).expect("address decodes"))
            .collect()
    }

    fn xor(&self, ty: u16) -> Option<SocketAddr> {
        self.xors(ty).first().copied()
    }

    fn lifetime(&self) -> Option<u32> {
        let v = self.msg().get(attr::LIFETIME)?;
        Some(attr::decode_u32(attr::LIFETIME, v).unwrap())
    }

    fn nonce(&self) -> Option<String> {
        self.get(attr::NONCE).map(|v| String::from_utf8(v).unwrap())
    }

    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(
            self.class(),
            Class::Success,
            "expected success, got {:?}",
            self.error()
        );
    }

    #[track_caller]
    fn assert_error(&self, code: u16) {
        assert_eq!(
            self.class(),
            Class::Error,
            "expected error {code}, got success"
        );
        assert_eq!(self.code(), Some(code), "got {:?}", self.error());
    }
}

/// The only response among `cmds`.
#[track_caller]
fn response(cmds: &[Command]) -> Resp {
    let mut rs = responses(cmds);
    assert_eq!(rs.len(), 1, "expected exactly one response in {cmds:?}");
    rs.remove(0)
}

fn responses(cmds: &[Command]) -> Vec<Resp> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::SendToClient { bytes, .. } => Some(Resp(bytes.clone())),
            _ => None,
        })
        .collect()
}

fn bind_requests(cmds: &[Command]) -> Vec<(BindToken, Vec<SocketAddr>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::BindRelay { token, addrs, .. } => Some((*token, addrs.clone())),
            _ => None,
        })
        .collect()
}

fn closed(cmds: &[Command]) -> Vec<SocketAddr> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::CloseRelay { addr } => Some(*addr),
            _ => None,
        })
        .collect()
}

// ---- stream transports (TCP/TLS) ----

#[test]
fn channel_data_to_a_stream_client_is_padded_to_four_bytes() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    c.five_tuple.transport = Transport::Tcp;
    let relayed = ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");

    let (to, framed) = ts
        .peer_input(relayed, addr("127.0.0.2:9000"), b"pong!")
        .expect("relayed");

    assert_eq!(to.transport, Transport::Tcp);
    assert_eq!(framed.len(), 4 + 8, "5 bytes of data padded to 8");
    assert_eq!(&framed[4 + 5..], &[0, 0, 0], "padding is zeroed");
    assert_eq!(
        crate::stun::stream_frame_len(&framed),
        Ok(Some(framed.len()))
    );
    let cd = ChannelData::parse(&framed).unwrap();
    assert_eq!(cd.data, b"pong!");
}

#[test]
fn a_closed_connection_ends_its_allocation() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    c.five_tuple.transport = Transport::Tls;
    let relayed = ts.allocate(&mut c);
    ts.take_events();

    ts.server.handle_connection_closed(c.five_tuple, ts.now);
    let cmds = ts.drain();

    assert_eq!(closed(&cmds), vec![relayed]);
    assert_eq!(ts.server.allocation_count(), 0);
    assert!(matches!(
        &ts.take_events()[..],
        [Event::AllocationEnded {
            reason: EndReason::ConnectionClosed,
            ..
        }]
    ));
    // A UDP client with the same addresses is another 5-tuple and is not affected.
    let mut other = ts.client(40002);
    ts.allocate(&mut other);
    let mut udp_twin = other.five_tuple;
    udp_twin.transport = Transport::Tcp;
    ts.server.handle_connection_closed(udp_twin, ts.now);
    assert_eq!(ts.server.allocation_count(), 1);
}

#[test]
fn a_connection_from_a_refused_client_is_refused_at_accept() {
    let mut ts = TestServer::new();
    let mut refused = five_tuple("127.0.9.1:40001");
    refused.transport = Transport::Tcp;
    let mut fine = five_tuple("127.0.0.1:40001");
    fine.transport = Transport::Tcp;

    assert!(!ts.server.handle_connection_opened(refused, ts.now));
    assert!(ts.server.handle_connection_opened(fine, ts.now));
    ts.drain();

    assert!(matches!(
        &ts.take_events()[..],
        [Event::Denied {
            subject: Subject::Client,
            rule: Rule::ClientDenyList,
            ..
        }]
    ));
}
