//! Draining before a stop ([`Admission::Draining`]): new allocations are sent to an alternate
//! server (300) or refused (508); running ones keep relaying and refreshing.

use super::*;
use crate::relay::Admission;

#[test]
fn draining_answers_allocate_with_300_and_the_alternate_of_the_clients_family() {
    let mut cfg = roomy_config();
    cfg.alternate_servers = vec![addr("[2001:db8::2]:3478"), addr("192.0.2.2:3478")];
    let mut ts = TestServer::with_config(cfg);
    ts.server.set_admission(Admission::Draining);
    let mut v4 = ts.client(40001);
    let mut v6 = ts.client_as("[::1]:40002", "bob");

    let to_v4 = ts.call(&mut v4, &Req::allocate());
    let to_v6 = ts.call(&mut v6, &Req::allocate());

    assert_eq!(
        to_v4.error(),
        Some((300, "Try Alternate: relay draining".to_owned()))
    );
    assert_eq!(
        attr::decode_address(
            attr::ALTERNATE_SERVER,
            &to_v4.get(attr::ALTERNATE_SERVER).unwrap()
        )
        .unwrap(),
        addr("192.0.2.2:3478")
    );
    assert!(
        to_v4.msg().has_integrity(),
        "the redirect of an authenticated request is authenticated (RFC 8489 §10)"
    );
    to_v6.assert_error(300);
    assert_eq!(
        attr::decode_address(
            attr::ALTERNATE_SERVER,
            &to_v6.get(attr::ALTERNATE_SERVER).unwrap()
        )
        .unwrap(),
        addr("[2001:db8::2]:3478")
    );
    let alternates = to_v6
        .msg()
        .attributes()
        .filter(|(ty, _)| *ty == attr::ALTERNATE_SERVER)
        .count();
    assert_eq!(alternates, 1, "exactly one ALTERNATE-SERVER");
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn draining_without_alternates_answers_508_and_keeps_running_allocations() {
    let mut ts = TestServer::with_config(roomy_config());
    let mut running = ts.client(40001);
    let relayed = ts.allocate(&mut running);
    ts.bind_channel(&mut running, 0x4000, "127.0.0.2:9000");
    ts.take_events();

    ts.server.set_admission(Admission::Draining);
    let mut late = ts.client(40002);
    let refused = ts.call(&mut late, &Req::allocate());
    let to_peer = ts.client_input(&running, &channel_data(0x4000, b"still"));
    let to_client = ts.peer_input(relayed, addr("127.0.0.2:9000"), b"here");
    let refresh = ts.call(&mut running, &Req::refresh());
    let tcp = ts.server.handle_connection_opened(
        FiveTuple {
            transport: Transport::Tcp,
            ..five_tuple("127.0.0.1:40003")
        },
        ts.now,
    );

    assert_eq!(
        refused.error(),
        Some((508, "Insufficient Capacity: relay draining".to_owned()))
    );
    assert!(refused.get(attr::ALTERNATE_SERVER).is_none());
    assert!(to_peer.is_some());
    assert!(to_client.is_some());
    refresh.assert_ok();
    assert!(
        tcp,
        "connections are accepted while draining, to hear the answer"
    );
    assert_eq!(ts.server.allocation_count(), 1);
    assert!(
        !ts.take_events()
            .iter()
            .any(|e| matches!(e, Event::Denied { .. } | Event::AllocationCreated { .. })),
        "a drain is no policy denial and creates nothing"
    );
}

#[test]
fn draining_with_alternates_of_another_family_answers_508() {
    let mut cfg = roomy_config();
    cfg.alternate_servers = vec![addr("[2001:db8::2]:3478")];
    let mut ts = TestServer::with_config(cfg);
    ts.server.set_admission(Admission::Draining);
    let mut v4 = ts.client(40001);

    let refused = ts.call(&mut v4, &Req::allocate());

    refused.assert_error(508);
    assert!(refused.get(attr::ALTERNATE_SERVER).is_none());
}
