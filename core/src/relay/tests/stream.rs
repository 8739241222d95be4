//! Stream transports (TCP/TLS): padding, connection open and close.

use super::*;

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
