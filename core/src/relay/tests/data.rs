//! The data path: ChannelData, Send and Data indications, and what is dropped.

use super::*;

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

#[test]
fn data_for_an_allocation_still_binding_is_counted_as_pending() {
    let mut ts = TestServer::new();
    ts.bind = None;
    let mut c = ts.client(40001);
    let cmds = ts.exchange(&mut c, &Req::allocate());
    let binds = bind_requests(&cmds);
    let [(_, addrs)] = &binds[..] else {
        panic!("expected one BindRelay in {cmds:?}");
    };
    let relay = addrs[0];

    let from_peer = ts.peer_input(relay, addr("127.0.0.2:9000"), b"early");
    let send = ts.send_indication("127.0.0.2:9000", b"early");
    let from_client = ts.client_input(&c, &send);

    assert_eq!(from_peer, None);
    assert_eq!(from_client, None);
    assert_eq!(
        ts.server.stats().dropped.get("allocation-pending"),
        Some(&2)
    );
}

#[test]
fn peer_data_too_large_to_frame_is_counted() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.permit(&mut c, &["127.0.0.2:1"]);

    // 65,528 bytes fit in a UDP datagram but not, with the Data indication's attributes, in
    // a STUN length field.
    let dropped = ts.peer_input(relayed, addr("127.0.0.2:9000"), &[7; 65_528]);

    assert_eq!(dropped, None);
    assert_eq!(ts.server.stats().dropped.get("too-large"), Some(&1));
    assert_eq!(ts.server.stats().packets_to_client, 0);
}
