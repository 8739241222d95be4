//! Allocate: families, EVEN-PORT and reservations, quotas, the bind round trip.

use super::*;

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
fn denied_client_is_403_without_a_nonce_and_with_a_denied_event() {
    let mut ts = TestServer::new();
    let c = ts.client_as("127.0.9.1:40001", "alice");

    // Unauthenticated: the smallest correct answer, no challenge to authenticate with.
    let r = ts.unauthenticated(c.five_tuple, &Req::allocate());

    r.assert_error(403);
    assert_eq!(
        r.error().map(|e| e.1),
        Some("client address refused by rule clients.deny".to_owned())
    );
    assert_eq!(r.nonce(), None, "no NONCE: the client cannot authenticate");
    for ty in [attr::REALM, attr::SOFTWARE, attr::FINGERPRINT] {
        assert!(r.get(ty).is_none(), "no attribute {ty:#06x}");
    }
    assert_eq!(ts.server.allocation_count(), 0);
    assert_eq!(
        ts.take_events(),
        vec![Event::Denied {
            id: None,
            at: ts.now.wall,
            stage: crate::relay::Stage::Allocate {
                transport: Transport::Udp,
                user: String::new(),
            },
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

/// `limits.max_allocations_per_source`: one address, whatever user ids it uses.
#[test]
fn per_source_quota_is_486_across_user_ids() {
    let mut cfg = roomy_config();
    cfg.limits.max_allocations_per_source = 2;
    let mut ts = TestServer::with_config(cfg);
    let mut a = ts.client_as("127.0.0.1:40001", "alice");
    let mut b = ts.client_as("127.0.0.1:40002", "bob");
    let mut c = ts.client_as("127.0.0.1:40003", "carol");
    let mut other = ts.client_as("127.0.0.2:40003", "carol");
    ts.allocate(&mut a);
    ts.allocate(&mut b);

    let (r, cmds) = ts.call_cmds(&mut c, &Req::allocate());

    r.assert_error(486);
    assert!(bind_requests(&cmds).is_empty());
    assert_eq!(ts.server.allocation_count(), 2);
    ts.allocate(&mut other);
    assert_eq!(ts.server.allocation_count(), 3);
    // An allocation of the source ends: its slot is free again.
    ts.call(&mut a, &Req::refresh().lifetime(0)).assert_ok();
    ts.allocate(&mut c);
    assert_eq!(ts.server.allocation_count(), 3);
}

/// An IPv6 /64 (`limits.ipv6_source_prefix` = 64) is one source; the next /64 is another.
#[test]
fn per_source_quota_counts_an_ipv6_prefix_once() {
    let mut cfg = roomy_config();
    cfg.limits.max_allocations_per_source = 2;
    let mut ts = TestServer::with_config(cfg);
    for (i, from) in ["[2001:db8:0:1::1]:40001", "[2001:db8:0:1:ffff::2]:40001"]
        .into_iter()
        .enumerate()
    {
        let mut c = ts.client_as(from, &format!("user{i}"));
        ts.allocate(&mut c);
    }
    let mut third = ts.client_as("[2001:db8:0:1::3]:40001", "user3");
    let mut next_prefix = ts.client_as("[2001:db8:0:2::3]:40001", "user3");

    ts.call(&mut third, &Req::allocate()).assert_error(486);
    ts.allocate(&mut next_prefix);

    assert_eq!(ts.server.allocation_count(), 3);
}

/// With `ipv6_source_prefix` = 128 every IPv6 address is a source of its own.
#[test]
fn per_source_quota_per_address_with_prefix_128() {
    let mut cfg = roomy_config();
    cfg.limits.max_allocations_per_source = 1;
    cfg.limits.ipv6_source_prefix = 128;
    let mut ts = TestServer::with_config(cfg);
    let mut a = ts.client_as("[2001:db8::1]:40001", "alice");
    let mut b = ts.client_as("[2001:db8::2]:40001", "alice");
    let mut a2 = ts.client_as("[2001:db8::1]:40002", "alice");

    ts.allocate(&mut a);
    ts.allocate(&mut b);
    ts.call(&mut a2, &Req::allocate()).assert_error(486);
}

/// A 486 for the source names it in the reason phrase, and the total limit (508) still wins
/// over it.
#[test]
fn total_limit_is_checked_before_the_source_quota() {
    let mut cfg = roomy_config();
    cfg.limits.max_allocations = 1;
    cfg.limits.max_allocations_per_source = 1;
    let mut ts = TestServer::with_config(cfg);
    let mut a = ts.client_as("127.0.0.1:40001", "alice");
    let mut b = ts.client_as("127.0.0.1:40002", "bob");
    ts.allocate(&mut a);

    ts.call(&mut b, &Req::allocate()).assert_error(508);
}

#[test]
fn denied_client_with_a_nonce_from_before_gets_the_full_403() {
    // Nonces are bound to the client's IP, so a refused client holds one only from before a
    // policy reload refused it. Issue one directly.
    let mut ts = TestServer::new();
    let mut c = ts.client_as("127.0.9.1:40001", "alice");
    c.nonce = Some(ts.server.auth.nonce(ip("127.0.9.1"), ts.now.wall));

    let (r, cmds) = ts.call_cmds(&mut c, &Req::allocate());

    r.assert_error(403);
    assert!(r.msg().has_integrity(), "an authenticated answer");
    assert!(bind_requests(&cmds).is_empty());
    let events = ts.take_events();
    assert!(
        matches!(&events[..], [Event::Denied { stage: crate::relay::Stage::Allocate { user, .. }, .. }] if user == "alice"),
        "{events:?}"
    );
}
