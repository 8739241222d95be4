//! ChannelBind: numbers, peers, cooldowns and limits.

use super::*;

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
            Event::ChannelBound { channel, peer, .. } if channel.get() == 0x4000 && *peer == addr("127.0.0.2:9000")
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
