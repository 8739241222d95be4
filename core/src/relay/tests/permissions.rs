//! CreatePermission: peers, limits and policy.

use super::*;

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
