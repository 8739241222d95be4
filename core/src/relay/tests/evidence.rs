//! What evidence needs from the core: per-peer traffic in `AllocationEnded` (also for peers
//! whose permission expired), the bounded peer ledger, closing admission, and ending every
//! allocation because evidence cannot be kept.

use super::*;
use crate::relay::{Admission, MAX_LEDGER_PEERS, PeerTraffic};

#[test]
fn allocation_ended_counts_traffic_per_peer_including_expired_permissions() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    ts.permit(&mut c, &["127.0.0.3:1"]);
    // Peer A: two ChannelData out (5 + 3 bytes), one datagram back (4 bytes).
    ts.client_input(&c, &channel_data(0x4000, b"hello"))
        .unwrap();
    ts.client_input(&c, &channel_data(0x4000, b"abc")).unwrap();
    ts.peer_input(relayed, addr("127.0.0.2:9000"), b"pong")
        .unwrap();
    // Peer B: one Send out (2 bytes), two datagrams back (1 + 6 bytes).
    let send = ts.send_indication("127.0.0.3:7000", b"hi");
    ts.client_input(&c, &send).unwrap();
    ts.peer_input(relayed, addr("127.0.0.3:7000"), b"x")
        .unwrap();
    ts.peer_input(relayed, addr("127.0.0.3:7000"), b"sixsix")
        .unwrap();
    // B's permission expires (A's is kept alive by re-binding its channel); A goes on.
    ts.advance(secs(200));
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    ts.advance(secs(150));
    assert!(
        ts.peer_input(relayed, addr("127.0.0.3:7000"), b"late")
            .is_none()
    );
    ts.client_input(&c, &channel_data(0x4000, b"more")).unwrap();
    ts.take_events();

    ts.call(&mut c, &Req::refresh().lifetime(0)).assert_ok();

    let events = ts.take_events();
    let [Event::AllocationEnded { peers, traffic, .. }] = &events[..] else {
        panic!("{events:?}");
    };
    let a = PeerTraffic {
        peer: ip("127.0.0.2"),
        traffic: TrafficCounters {
            packets_to_peer: 3,
            bytes_to_peer: 12,
            packets_to_client: 1,
            bytes_to_client: 4,
        },
    };
    let b = PeerTraffic {
        peer: ip("127.0.0.3"),
        traffic: TrafficCounters {
            packets_to_peer: 1,
            bytes_to_peer: 2,
            packets_to_client: 2,
            bytes_to_client: 7,
        },
    };
    assert_eq!(peers, &vec![a, b]);
    assert_eq!(
        *traffic,
        TrafficCounters {
            packets_to_peer: 4,
            bytes_to_peer: 14,
            packets_to_client: 3,
            bytes_to_client: 11,
        }
    );
}

#[test]
fn a_permitted_peer_without_traffic_is_in_the_ledger_with_zeros() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    ts.permit(&mut c, &["127.0.0.2:1", "127.0.0.3:1"]);
    ts.take_events();

    ts.call(&mut c, &Req::refresh().lifetime(0)).assert_ok();

    let events = ts.take_events();
    let [Event::AllocationEnded { peers, .. }] = &events[..] else {
        panic!("{events:?}");
    };
    let ips: Vec<_> = peers.iter().map(|p| p.peer).collect();
    assert_eq!(ips, vec![ip("127.0.0.2"), ip("127.0.0.3")]);
    assert!(
        peers
            .iter()
            .all(|p| p.traffic == TrafficCounters::default())
    );
}

#[test]
fn the_peer_ledger_is_bounded_over_the_allocations_life() {
    let mut cfg = config();
    cfg.limits.max_permissions_per_allocation = 1000;
    let mut ts = TestServer::with_config(cfg);
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    let peers: Vec<String> = (0..MAX_LEDGER_PEERS)
        .map(|i| format!("127.0.1.{}:1", i + 1))
        .collect();
    for chunk in peers.chunks(16) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        ts.permit(&mut c, &chunk);
        // The permissions expire; their ledger entries stay.
        ts.advance(secs(301));
        ts.call(&mut c, &Req::refresh()).assert_ok();
    }

    let one_more = ts.call(&mut c, &Req::permission(&["127.0.2.1:1"]));
    let channel = ts.call(&mut c, &Req::channel_bind(0x4000, "127.0.2.1:1"));
    let known = ts.call(&mut c, &Req::permission(&["127.0.1.1:1"]));

    one_more.assert_error(508);
    channel.assert_error(508);
    known.assert_ok();
}

#[test]
fn closed_admission_refuses_allocations_with_508_and_keeps_running_ones() {
    let mut ts = TestServer::with_config(roomy_config());
    let mut running = ts.client(40001);
    let relayed = ts.allocate(&mut running);
    ts.bind_channel(&mut running, 0x4000, "127.0.0.2:9000");
    ts.take_events();

    ts.server
        .set_admission(Admission::Closed("evidence unavailable"));
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

    refused.assert_error(508);
    assert_eq!(
        refused.error(),
        Some((
            508,
            "Insufficient Capacity: evidence unavailable".to_owned()
        ))
    );
    assert!(to_peer.is_some());
    assert!(to_client.is_some());
    refresh.assert_ok();
    assert!(!tcp, "no new connection while admission is closed");
    assert!(
        !ts.take_events()
            .iter()
            .any(|e| matches!(e, Event::Denied { .. } | Event::AllocationCreated { .. })),
        "a closed admission is no policy denial and creates nothing"
    );

    ts.server.set_admission(Admission::Open);
    let mut again = ts.client(40004);
    ts.allocate(&mut again);
}

#[test]
fn end_all_ends_every_allocation_with_evidence_unavailable() {
    let mut ts = TestServer::with_config(roomy_config());
    let mut a = ts.client(40001);
    let mut b = ts.client(40002);
    let ra = ts.allocate(&mut a);
    let rb = ts.allocate(&mut b);
    ts.take_events();

    ts.server.end_all(EndReason::EvidenceUnavailable, ts.now);
    let cmds = ts.drain();

    let events = ts.take_events();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| matches!(
        e,
        Event::AllocationEnded {
            reason: EndReason::EvidenceUnavailable,
            ..
        }
    )));
    let mut closed = closed(&cmds);
    closed.sort();
    let mut expected = vec![ra, rb];
    expected.sort();
    assert_eq!(closed, expected);
    assert_eq!(ts.server.allocation_count(), 0);
    assert_eq!(
        EndReason::EvidenceUnavailable.name(),
        "evidence-unavailable"
    );
}
