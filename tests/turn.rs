//! TURN over real loopback sockets against the relay running in-process: allocation,
//! permissions, Send/Data indications, channels, refresh, IPv6, policy and authentication.
//!
//! Negative checks ("nothing arrives") do not wait for a timeout: the forbidden datagram is
//! sent first, then an allowed marker along the same path; the relay handles the datagrams of
//! one socket in order, so the marker must be the first thing to arrive.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Peer, Relayed, TurnClient, in_relay_range, issue_credential, start_server,
    start_server_with_workers, udp_port_closed, wall_now,
};
use eeaturn::stun::attr::{self, Family};
use eeaturn::stun::{Class, MessageBuilder, Method};

#[tokio::test]
async fn send_indication_reaches_the_peer_and_its_answer_comes_back_as_data_indication() {
    let server = start_server("").await;
    let peer = Peer::bind("127.0.2.1").await;
    let mut client = server.client("127.0.1.1", "alice").await;

    let alloc = client.allocate().await.expect("Allocate succeeds");
    let relayed = alloc.relayed();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert!(
        in_relay_range(relayed),
        "{relayed} is in the configured port range"
    );
    assert_eq!(
        alloc.mapped,
        client.local_addr(),
        "XOR-MAPPED-ADDRESS is the client"
    );
    assert_eq!(alloc.lifetime, 600, "the default lifetime is 10 minutes");

    client
        .create_permission(&[peer.addr()])
        .await
        .expect("CreatePermission succeeds");
    client.send_indication(peer.addr(), b"hello peer").await;
    let (data, from) = peer.recv().await;
    assert_eq!(data, b"hello peer");
    assert_eq!(from, relayed, "the peer sees the relayed transport address");

    peer.send_to(b"hello client", relayed).await;
    assert_eq!(
        client.recv_relayed().await,
        Relayed::Data {
            peer: peer.addr(),
            data: b"hello client".to_vec()
        }
    );

    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 1);
    assert_eq!(stats.packets_to_peer, 1);
    assert_eq!(stats.packets_to_client, 1);
}

#[tokio::test]
async fn channel_data_flows_both_ways_after_channel_bind() {
    let server = start_server("").await;
    let peer = Peer::bind("127.0.2.1").await;
    let mut client = server.client("127.0.1.1", "alice").await;
    let relayed = client.allocate().await.expect("Allocate").relayed();

    // ChannelBind installs the permission itself. See RFC 8656 §12.2.
    client
        .channel_bind(0x4001, peer.addr())
        .await
        .expect("ChannelBind succeeds");
    client.send_channel_data(0x4001, b"over the channel").await;
    let (data, from) = peer.recv().await;
    assert_eq!(data, b"over the channel");
    assert_eq!(from, relayed);

    // Odd-length payload: the server may pad ChannelData, the length field must not count it.
    peer.send_to(b"back!", relayed).await;
    assert_eq!(
        client.recv_relayed().await,
        Relayed::Channel {
            channel: 0x4001,
            data: b"back!".to_vec()
        }
    );

    // A Send indication to a bound peer is still accepted; the answer comes on the channel.
    client.send_indication(peer.addr(), b"indication").await;
    assert_eq!(peer.recv().await.0, b"indication");
    peer.send_to(b"still channel", relayed).await;
    assert_eq!(
        client.recv_relayed().await,
        Relayed::Channel {
            channel: 0x4001,
            data: b"still channel".to_vec()
        }
    );

    // Re-binding the same channel to the same peer refreshes it; another peer on the same
    // channel is refused. See RFC 8656 §12.2.
    client
        .channel_bind(0x4001, peer.addr())
        .await
        .expect("refreshing a channel binding succeeds");
    let other: SocketAddr = "127.0.2.2:4000".parse().expect("literal");
    assert_eq!(
        client.channel_bind(0x4001, other).await.map_err(|e| e.code),
        Err(400)
    );
    server.stop().await;
}

#[tokio::test]
async fn ipv6_allocation_relays_to_an_ipv6_peer() {
    let server = start_server("").await;
    let peer = Peer::bind("::1").await;
    let v4_peer: SocketAddr = "127.0.2.1:5000".parse().expect("literal");
    let mut client = server.client("127.0.1.3", "alice").await;

    let alloc = client
        .allocate_family(Family::V6)
        .await
        .expect("Allocate with REQUESTED-ADDRESS-FAMILY IPv6 succeeds");
    let relayed = alloc.relayed();
    assert_eq!(relayed.ip().to_string(), "::1");
    assert!(
        in_relay_range(relayed),
        "{relayed} is in the configured port range"
    );

    // An IPv6 allocation has no IPv4 relayed address. See RFC 8656 §9.1.
    assert_eq!(
        client
            .create_permission(&[v4_peer])
            .await
            .map_err(|e| e.code),
        Err(443)
    );

    client
        .create_permission(&[peer.addr()])
        .await
        .expect("permission");
    client.send_indication(peer.addr(), b"v6 out").await;
    let (data, from) = peer.recv().await;
    assert_eq!(data, b"v6 out");
    assert_eq!(from, relayed);
    peer.send_to(b"v6 back", relayed).await;
    assert_eq!(
        client.recv_relayed().await,
        Relayed::Data {
            peer: peer.addr(),
            data: b"v6 back".to_vec()
        }
    );

    client
        .channel_bind(0x4002, peer.addr())
        .await
        .expect("bind");
    client.send_channel_data(0x4002, b"v6 channel").await;
    assert_eq!(peer.recv().await, (b"v6 channel".to_vec(), relayed));
    peer.send_to(b"v6 channel back", relayed).await;
    assert_eq!(
        client.recv_relayed().await,
        Relayed::Channel {
            channel: 0x4002,
            data: b"v6 channel back".to_vec()
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn client_over_the_ipv6_listener_gets_an_ipv4_relay_by_default() {
    let server = start_server("").await;
    let mut client = server.client("::1", "alice").await;
    assert_eq!(client.binding().await, client.local_addr());
    let alloc = client.allocate().await.expect("Allocate over IPv6");
    assert_eq!(alloc.mapped, client.local_addr());
    assert_eq!(
        alloc.relayed().ip().to_string(),
        "127.0.0.1",
        "without REQUESTED-ADDRESS-FAMILY the relayed address is IPv4 (RFC 8656 §7.2)"
    );
    server.stop().await;
}

#[tokio::test]
async fn additional_address_family_allocates_both_families() {
    let server = start_server("").await;
    let mut client = server.client("127.0.1.4", "alice").await;
    let alloc = client
        .allocate_with(&|b: &mut MessageBuilder| {
            b.add_family(attr::ADDITIONAL_ADDRESS_FAMILY, Family::V6);
        })
        .await
        .expect("dual-stack Allocate succeeds");
    let ips: Vec<String> = alloc.relayed.iter().map(|a| a.ip().to_string()).collect();
    assert_eq!(ips, ["127.0.0.1", "::1"]);
    assert!(alloc.relayed.iter().all(|a| in_relay_range(*a)));
    server.stop().await;
}

#[tokio::test]
async fn odd_and_large_payloads_are_relayed_intact() {
    let server = start_server("").await;
    let peer = Peer::bind("127.0.2.1").await;
    let mut client = server.client("127.0.1.1", "alice").await;
    let relayed = client.allocate().await.expect("Allocate").relayed();
    client
        .create_permission(&[peer.addr()])
        .await
        .expect("permission");
    let payloads: Vec<Vec<u8>> = [1usize, 3, 5, 1401]
        .iter()
        .map(|&n| (0..n).map(|i| (i % 251) as u8).collect())
        .collect();

    // Data indications (padded to four bytes by the server; DATA's length excludes padding).
    for p in &payloads {
        client.send_indication(peer.addr(), p).await;
        assert_eq!(&peer.recv().await.0, p, "Send of {} bytes", p.len());
        peer.send_to(p, relayed).await;
        assert_eq!(
            client.recv_relayed().await,
            Relayed::Data {
                peer: peer.addr(),
                data: p.clone()
            },
            "Data indication of {} bytes",
            p.len()
        );
    }
    // ChannelData.
    client
        .channel_bind(0x4000, peer.addr())
        .await
        .expect("bind");
    for p in &payloads {
        client.send_channel_data(0x4000, p).await;
        assert_eq!(&peer.recv().await.0, p, "ChannelData of {} bytes", p.len());
        peer.send_to(p, relayed).await;
        assert_eq!(
            client.recv_relayed().await,
            Relayed::Channel {
                channel: 0x4000,
                data: p.clone()
            }
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn refresh_with_lifetime_zero_frees_the_allocation() {
    let server = start_server("").await;
    let peer = Peer::bind("127.0.2.1").await;
    let mut client = server.client("127.0.1.1", "alice").await;
    let old = client.allocate().await.expect("Allocate").relayed();
    client
        .create_permission(&[peer.addr()])
        .await
        .expect("permission");

    assert_eq!(
        client.refresh(0).await,
        Ok(0),
        "Refresh 0 answers LIFETIME 0"
    );
    assert!(
        udp_port_closed(old).await,
        "the relayed port {old} is closed after Refresh 0"
    );
    assert_eq!(
        client
            .create_permission(&[peer.addr()])
            .await
            .map_err(|e| e.code),
        Err(437),
        "the allocation is gone"
    );

    let new = client
        .allocate()
        .await
        .expect("a new Allocate on the same 5-tuple succeeds")
        .relayed();
    client
        .create_permission(&[peer.addr()])
        .await
        .expect("permission");
    if new != old {
        peer.send_to(b"to the old port", old).await;
    }
    peer.send_to(b"marker", new).await;
    assert_eq!(
        client.recv_relayed().await,
        Relayed::Data {
            peer: peer.addr(),
            data: b"marker".to_vec()
        },
        "nothing is relayed from the freed port"
    );

    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 2);
    assert_eq!(stats.allocations_ended.get("released"), Some(&1));
}

#[tokio::test]
async fn refresh_extends_and_caps_the_lifetime() {
    let server = start_server("").await;
    let mut client = server.client("127.0.1.1", "alice").await;
    client.allocate().await.expect("Allocate");
    assert_eq!(client.refresh(1200).await, Ok(1200));
    assert_eq!(
        client.refresh(100_000).await,
        Ok(3600),
        "capped at limits.max_lifetime (1h)"
    );
    assert_eq!(
        client.refresh(10).await,
        Ok(600),
        "never below limits.default_lifetime"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_second_allocate_on_the_same_five_tuple_is_437_but_a_retransmission_is_answered() {
    let server = start_server("").await;
    let mut client = server.client("127.0.1.1", "alice").await;
    let first = client.allocate().await.expect("Allocate");

    // The same request again (same transaction id): the stored response. See RFC 8656 §7.2.
    let again = client.retransmit_last().await;
    assert_eq!(again.class(), Class::Success);
    assert_eq!(
        again.xor_addresses(attr::XOR_RELAYED_ADDRESS),
        first.relayed,
        "a retransmitted Allocate gets the same relayed address"
    );

    // A new transaction on the same 5-tuple is a mismatch.
    assert_eq!(
        client.allocate().await.map(|_| ()).map_err(|e| e.code),
        Err(437)
    );
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 1);
}

#[tokio::test]
async fn malformed_or_unsupported_allocates_get_their_error_codes() {
    let server = start_server("").await;
    let mut client = server.client("127.0.1.1", "alice").await;
    let code = |r: common::Response| r.error().map(|e| e.code);

    // Requests that need an allocation, before there is one. See RFC 8656 §7.3, §9.
    assert_eq!(client.refresh(600).await.map_err(|e| e.code), Err(437));
    let peer: SocketAddr = "127.0.2.1:4000".parse().expect("literal");
    assert_eq!(
        client.create_permission(&[peer]).await.map_err(|e| e.code),
        Err(437)
    );

    // REQUESTED-TRANSPORT missing, or not UDP. See RFC 8656 §7.2.
    let r = client.transact(Method::ALLOCATE, &|_| {}).await;
    assert_eq!(code(r), Some(400));
    let r = client
        .transact(Method::ALLOCATE, &|b| {
            b.add_raw(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
        })
        .await;
    assert_eq!(code(r), Some(442));

    // DONT-FRAGMENT, which a UDP relay that cannot set DF must refuse with 420 listing it.
    let r = client
        .transact(Method::ALLOCATE, &|b| {
            b.add_raw(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
            b.add_raw(attr::DONT_FRAGMENT, &[]);
        })
        .await;
    assert_eq!(r.error().map(|e| e.code), Some(420));
    assert_eq!(
        r.attr(attr::UNKNOWN_ATTRIBUTES),
        Some(attr::DONT_FRAGMENT.to_be_bytes().to_vec())
    );

    // None of that left an allocation behind.
    client.allocate().await.expect("a proper Allocate succeeds");
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 1);
}

#[tokio::test]
async fn a_nonce_issued_to_another_address_gets_438_and_a_fresh_nonce() {
    let server = start_server("").await;
    let mut a = server.client("127.0.1.1", "alice").await;
    a.allocate().await.expect("Allocate a");
    // b signs its first request with the nonce a was given: nonces are bound to the client's
    // IP, so the server answers 438 with a nonce of b's own, and the retry succeeds.
    let mut b = server.client("127.0.1.2", "bob").await;
    b.adopt_challenge_of(&a);
    b.allocate().await.expect("Allocate b after 438");
    let stats = server.stop().await;
    assert_eq!(stats.requests_failed.get(&("allocate", 438)), Some(&1));
    assert_eq!(stats.requests_failed.get(&("allocate", 401)), Some(&1));
    assert_eq!(stats.allocations_created, 2);
}

#[tokio::test]
async fn requests_signed_by_another_user_get_441() {
    let server = start_server("").await;
    let mut client = server.client("127.0.1.1", "alice").await;
    client.allocate().await.expect("Allocate");
    // Valid credentials, but not those the allocation was made with. See RFC 8656 §5.
    client.set_credential(server.credential("bob"));
    assert_eq!(client.refresh(600).await.map_err(|e| e.code), Err(441));
    let peer: SocketAddr = "127.0.2.1:4000".parse().expect("literal");
    assert_eq!(
        client.create_permission(&[peer]).await.map_err(|e| e.code),
        Err(441)
    );
    server.stop().await;
}

#[tokio::test]
async fn even_port_reserves_the_next_port_for_the_reservation_token() {
    let server = start_server("").await;
    let mut first = server.client("127.0.1.1", "alice").await;
    let alloc = first
        .allocate_with(&|b: &mut MessageBuilder| b.add_raw(attr::EVEN_PORT, &[0x80]))
        .await
        .expect("Allocate with EVEN-PORT R=1");
    let even = alloc.relayed();
    assert_eq!(even.port() % 2, 0, "{even} is even");
    let token = alloc
        .response
        .attr(attr::RESERVATION_TOKEN)
        .expect("RESERVATION-TOKEN in the response");
    assert_eq!(token.len(), 8);
    // The reserved port is bound already: no other process can take it meanwhile.
    let reserved = SocketAddr::new(even.ip(), even.port() + 1);
    assert_eq!(
        std::net::UdpSocket::bind(reserved)
            .map(|_| ())
            .map_err(|e| e.kind()),
        Err(std::io::ErrorKind::AddrInUse),
        "{reserved} is held for the token"
    );

    // See RFC 8656 §7.2: the token gets the port after the even one.
    let mut second = server.client("127.0.1.2", "alice").await;
    let next = second
        .allocate_with(&|b: &mut MessageBuilder| b.add_raw(attr::RESERVATION_TOKEN, &token))
        .await
        .expect("Allocate with the RESERVATION-TOKEN")
        .relayed();
    assert_eq!(next, SocketAddr::new(even.ip(), even.port() + 1));

    // A token is good for one allocation.
    let mut third = server.client("127.0.1.3", "alice").await;
    let again = third
        .allocate_with(&|b: &mut MessageBuilder| b.add_raw(attr::RESERVATION_TOKEN, &token))
        .await;
    assert_eq!(again.map(|_| ()).map_err(|e| e.code), Err(508));
    server.stop().await;
}

#[tokio::test]
async fn a_peer_without_permission_cannot_reach_the_client() {
    let server = start_server("").await;
    let allowed = Peer::bind("127.0.2.1").await;
    let allowed_other_port = Peer::bind("127.0.2.1").await;
    let intruder = Peer::bind("127.0.2.2").await;
    let mut client = server.client("127.0.1.1", "alice").await;
    let relayed = client.allocate().await.expect("Allocate").relayed();
    client
        .create_permission(&[allowed.addr()])
        .await
        .expect("permission");

    intruder.send_to(b"intrusion", relayed).await;
    // Permissions are per IP address, not per port. See RFC 8656 §9.
    allowed_other_port.send_to(b"same ip", relayed).await;
    assert_eq!(
        client.recv_relayed().await,
        Relayed::Data {
            peer: allowed_other_port.addr(),
            data: b"same ip".to_vec()
        },
        "the first datagram relayed is the permitted one"
    );

    // And the client cannot send to the intruder without a permission either.
    client.send_indication(intruder.addr(), b"leak").await;
    client
        .create_permission(&[intruder.addr()])
        .await
        .expect("permission");
    client
        .send_indication(intruder.addr(), b"now allowed")
        .await;
    assert_eq!(intruder.recv().await.0, b"now allowed");

    let stats = server.stop().await;
    assert_eq!(
        stats.dropped.get("no-permission"),
        Some(&2),
        "one datagram each way was dropped for lack of a permission"
    );
}

#[tokio::test]
async fn a_denied_peer_gets_403() {
    let server = start_server("").await;
    let allowed = Peer::bind("127.0.2.1").await;
    let denied: SocketAddr = "127.0.5.1:4000".parse().expect("literal");
    let mut client = server.client("127.0.1.1", "alice").await;
    client.allocate().await.expect("Allocate");

    let e = client
        .create_permission(&[denied])
        .await
        .expect_err("denied");
    assert_eq!(e.code, 403, "{e:?}");
    let e = client
        .channel_bind(0x4000, denied)
        .await
        .expect_err("denied");
    assert_eq!(e.code, 403, "{e:?}");

    // A request naming an allowed and a denied peer installs nothing. See RFC 8656 §9.2.
    let e = client
        .create_permission(&[allowed.addr(), denied])
        .await
        .expect_err("one peer denied");
    assert_eq!(e.code, 403);
    client
        .send_indication(allowed.addr(), b"must not pass")
        .await;
    client
        .create_permission(&[allowed.addr()])
        .await
        .expect("permission");
    client.send_indication(allowed.addr(), b"marker").await;
    assert_eq!(allowed.recv().await.0, b"marker");

    let stats = server.stop().await;
    assert_eq!(stats.denials.get(&("peer", "peers.deny")), Some(&3));
}

#[tokio::test]
async fn a_denied_client_gets_403_at_allocate() {
    let server = start_server("[clients]\ndeny = [\"127.0.1.200/32\"]\n").await;
    let mut denied = server.client("127.0.1.200", "alice").await;
    let e = denied.allocate().await.expect_err("client refused");
    assert_eq!(e.code, 403, "{e:?}");
    let mut allowed = server.client("127.0.1.201", "alice").await;
    allowed
        .allocate()
        .await
        .expect("another client is not affected");
    let stats = server.stop().await;
    assert_eq!(stats.denials.get(&("client", "clients.deny")), Some(&1));
    assert_eq!(stats.allocations_created, 1);
}

#[tokio::test]
async fn a_wrong_password_gets_401() {
    let server = start_server("").await;
    let mut credential = server.credential("mallory");
    credential.password = "d3JvbmcgcGFzc3dvcmQgZm9yIG1hbGxvcnk=".to_owned();
    let mut client = TurnClient::bind("127.0.1.1", server.v4, credential).await;
    let e = client.allocate().await.expect_err("wrong password");
    assert_eq!(e.code, 401, "{e:?}");
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 0);
}

#[tokio::test]
async fn an_expired_credential_gets_401() {
    let server = start_server("").await;
    // Correctly signed, but it expired an hour ago.
    let two_hours_ago = wall_now() - Duration::from_secs(7200);
    let credential = issue_credential("alice", Duration::from_secs(3600), two_hours_ago);
    let mut client = TurnClient::bind("127.0.1.1", server.v4, credential).await;
    let e = client.allocate().await.expect_err("expired credential");
    assert_eq!(e.code, 401, "{e:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_credential_valid_for_longer_than_allowed_gets_401() {
    let server = start_server("").await;
    // Signed with the right secret, but valid for two days (auth.max_credential_ttl is 24h).
    let credential = issue_credential("alice", Duration::from_secs(2 * 86_400), wall_now());
    let mut client = TurnClient::bind("127.0.1.1", server.v4, credential).await;
    let e = client.allocate().await.expect_err("too long-lived");
    assert_eq!(e.code, 401, "{e:?}");
    server.stop().await;
}

#[tokio::test]
async fn sha256_password_algorithm_is_accepted() {
    let server = start_server("").await;
    let mut client = server.client("127.0.1.1", "alice").await;
    client.use_sha256();
    // The client asserts that every success carries MESSAGE-INTEGRITY-SHA256 under its key.
    client.allocate().await.expect("Allocate with SHA-256");
    assert_eq!(client.refresh(600).await, Ok(600));
    server.stop().await;
}

#[tokio::test]
async fn two_clients_talk_through_their_relayed_addresses() {
    let server = start_server("").await;
    let mut a = server.client("127.0.1.1", "alice").await;
    let mut b = server.client("127.0.1.2", "bob").await;
    let relay_a = a.allocate().await.expect("Allocate a").relayed();
    let relay_b = b.allocate().await.expect("Allocate b").relayed();
    assert_ne!(relay_a, relay_b);
    a.create_permission(&[relay_b]).await.expect("a permits b");
    b.create_permission(&[relay_a]).await.expect("b permits a");

    a.send_indication(relay_b, b"from a").await;
    assert_eq!(
        b.recv_relayed().await,
        Relayed::Data {
            peer: relay_a,
            data: b"from a".to_vec()
        }
    );
    b.channel_bind(0x4000, relay_a)
        .await
        .expect("b binds a channel");
    b.send_channel_data(0x4000, b"from b").await;
    assert_eq!(
        a.recv_relayed().await,
        Relayed::Data {
            peer: relay_b,
            data: b"from b".to_vec()
        }
    );
    let stats = server.stop().await;
    assert_eq!(stats.packets_to_peer, 2);
    assert_eq!(stats.packets_to_client, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_allocations_from_different_sockets_get_distinct_relayed_ports() {
    const N: usize = 200;
    let server = start_server("").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        // Users differ: limits.max_allocations_per_user is 100.
        let credential = server.credential(&format!("user{i}"));
        let ip = format!("127.0.1.{}", 10 + i % 50);
        let server_addr = server.v4;
        tasks.spawn(async move {
            let mut client = TurnClient::bind(&ip, server_addr, credential).await;
            let alloc = client.allocate().await;
            (client, alloc)
        });
    }
    let mut clients = Vec::with_capacity(N);
    let mut ports = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (client, alloc) = joined.expect("client task");
        let relayed = alloc
            .unwrap_or_else(|e| panic!("Allocate from {} failed: {e:?}", client.local_addr()))
            .relayed();
        assert_eq!(relayed.ip().to_string(), "127.0.0.1");
        assert!(in_relay_range(relayed), "{relayed} in range");
        ports.insert(relayed.port());
        clients.push(client);
    }
    assert_eq!(ports.len(), N, "every allocation has its own relayed port");
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, N as u64);
}

#[tokio::test]
async fn the_per_user_quota_answers_486() {
    let server = start_server("[limits]\nmax_allocations_per_user = 2\n").await;
    let mut clients = Vec::new();
    for i in 1..=2 {
        let mut c = server.client(&format!("127.0.1.{i}"), "carol").await;
        c.allocate().await.expect("within the quota");
        clients.push(c);
    }
    let mut third = server.client("127.0.1.3", "carol").await;
    assert_eq!(
        third.allocate().await.map(|_| ()).map_err(|e| e.code),
        Err(486)
    );
    let mut other_user = server.client("127.0.1.3", "dave").await;
    other_user
        .allocate()
        .await
        .expect("another user is not affected");
    server.stop().await;
}

#[tokio::test]
async fn binding_requests_are_answered_without_credentials() {
    let server = start_server("").await;
    let mut client = server.client("127.0.1.7", "alice").await;
    assert_eq!(client.binding().await, client.local_addr());
    server.stop().await;
}

/// Four workers share the listening port: clients on many source ports land on different
/// workers, yet each relays both ways, the per-user quota holds for the whole relay, and a
/// RESERVATION-TOKEN made at one worker is redeemed by sockets that may hash to any other,
/// whose worker then relays on the socket held for the reservation.
#[tokio::test]
async fn four_workers_share_the_port_the_quotas_and_the_reservations() {
    let server = start_server_with_workers(
        4,
        Some("25000-25999"),
        "[limits]\nmax_allocations_per_user = 12\n",
    )
    .await;
    let echo = common::spawn_echo_peer("127.0.2.1").await;
    let mut clients = Vec::new();
    for i in 0..12 {
        let mut c = server.client("127.0.1.1", "bob").await;
        c.allocate()
            .await
            .unwrap_or_else(|e| panic!("Allocate {i} of 12: {e:?}"));
        clients.push(c);
    }
    // The 13th allocation of the same user is refused, whichever worker it reaches.
    let mut extra = server.client("127.0.1.1", "bob").await;
    assert_eq!(
        extra.allocate().await.map(|_| ()).map_err(|e| e.code),
        Err(486)
    );
    for (i, c) in clients.iter_mut().enumerate() {
        c.channel_bind(0x4000, echo).await.expect("ChannelBind");
        let payload = format!("through worker-hashed client {i}");
        c.send_channel_data(0x4000, payload.as_bytes()).await;
        match c.recv_relayed().await {
            Relayed::Channel { channel, data } => {
                assert_eq!((channel, data.as_slice()), (0x4000, payload.as_bytes()));
            }
            other => panic!("client {i}: expected ChannelData back, got {other:?}"),
        }
    }
    drop(clients);
    drop(extra);

    // Reservations: each of eight tokens is redeemed by a fresh socket (another source port,
    // so often another worker) and yields the port after the even one.
    for round in 0..8 {
        let mut first = server.client("127.0.1.2", "carol").await;
        let alloc = first
            .allocate_with(&|b: &mut MessageBuilder| b.add_raw(attr::EVEN_PORT, &[0x80]))
            .await
            .expect("Allocate with EVEN-PORT R=1");
        let even = alloc.relayed();
        let token = alloc
            .response
            .attr(attr::RESERVATION_TOKEN)
            .expect("RESERVATION-TOKEN");
        let mut second = server.client("127.0.1.3", "carol").await;
        let next = second
            .allocate_with(&|b: &mut MessageBuilder| b.add_raw(attr::RESERVATION_TOKEN, &token))
            .await
            .unwrap_or_else(|e| panic!("round {round}: redeeming the token: {e:?}"))
            .relayed();
        assert_eq!(next, SocketAddr::new(even.ip(), even.port() + 1));
        // The socket held for the reservation (bound by the first socket's worker) relays
        // for the second socket's worker.
        second
            .channel_bind(0x4001, echo)
            .await
            .expect("ChannelBind");
        let payload = format!("through the reserved port, round {round}");
        second.send_channel_data(0x4001, payload.as_bytes()).await;
        match second.recv_relayed().await {
            Relayed::Channel { channel, data } => {
                assert_eq!((channel, data.as_slice()), (0x4001, payload.as_bytes()));
            }
            other => panic!("round {round}: expected ChannelData back, got {other:?}"),
        }
        first.refresh(0).await.expect("release");
        second.refresh(0).await.expect("release");
    }
    let stats = server.stop().await;
    assert_eq!(stats.packets_to_peer, 20);
    assert_eq!(stats.packets_to_client, 20);
}

/// `limits.max_allocations_per_source`: one address holds at most that many allocations,
/// whatever user ids it presents (486), while another address is served; a freed allocation
/// frees its slot.
#[tokio::test]
async fn the_per_source_quota_answers_486_whatever_the_user() {
    let server = start_server("[limits]\nmax_allocations_per_source = 2\n").await;
    let mut clients = Vec::new();
    for user in ["erin", "frank"] {
        let mut c = server.client("127.0.1.4", user).await;
        c.allocate().await.expect("within the source's quota");
        clients.push(c);
    }
    let mut third = server.client("127.0.1.4", "grace").await;
    assert_eq!(
        third.allocate().await.map(|_| ()).map_err(|e| e.code),
        Err(486)
    );
    let mut elsewhere = server.client("127.0.1.5", "grace").await;
    elsewhere
        .allocate()
        .await
        .expect("another address is not affected");
    clients[0].refresh(0).await.expect("Refresh 0 frees one");
    third
        .allocate()
        .await
        .expect("the freed slot is the source's again");
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 4);
}

#[tokio::test]
async fn a_second_relay_on_the_same_udp_port_fails_to_start() {
    // Both with several workers, so both would bind with SO_REUSEPORT.
    let first = start_server_with_workers(2, None, "").await;
    let (dir, path) = common::write_config_dir("");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("[server]\n", "[server]\nworkers = 2\n", 1)
        .replacen(
            r#"listen = ["udp://127.0.0.1:0", "udp://[::1]:0"]"#,
            &format!(r#"listen = ["udp://{}"]"#, first.v4),
            1,
        );
    let config = eeaturn::config::Config::parse(&text, dir.path()).unwrap();
    let err = match eeaturn::shell::start(config).await {
        Ok(_) => panic!("a second relay started on {}", first.v4),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&first.v4.to_string()), "{err}");
    assert!(err.contains("already in use"), "{err}");
    // The first relay still answers on its port.
    let mut client = first.client("127.0.1.1", "alice").await;
    client
        .allocate()
        .await
        .expect("the first relay still serves");
    first.stop().await;
}
