//! Refresh: lifetimes, release, and the policy recheck.

use super::*;

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
