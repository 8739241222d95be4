//! Interop with the TURN client of webrtc-rs (the `turn` crate), against the relay running
//! in-process: a third-party client must authenticate with our REST credentials, allocate,
//! create permissions and channels, and relay through us.

mod common;

use std::sync::Arc;

use common::{TIMEOUT, in_relay_range, spawn_echo_peer, start_server, udp_port_closed};
use eeaturn::credentials::Credential;
use tokio::net::UdpSocket;
use tokio::time::timeout;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_client_allocates_and_relays_to_an_echo_peer() {
    let server = start_server("").await;
    let echo = spawn_echo_peer("127.0.2.1").await;
    let (client, local) = webrtc_client(server.v4, server.credential("webrtc-rs")).await;

    let mapped = timeout(TIMEOUT, client.send_binding_request())
        .await
        .expect("Binding answered in time")
        .expect("Binding succeeds");
    assert_eq!(mapped, local, "the server reflects the client's address");

    let relay = timeout(TIMEOUT, client.allocate())
        .await
        .expect("Allocate answered in time")
        .expect("Allocate succeeds with REST credentials");
    let relayed = relay.local_addr().expect("relayed address");
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert!(
        in_relay_range(relayed),
        "{relayed} is in the configured port range"
    );

    // The first send_to creates the permission and starts a ChannelBind; later datagrams
    // travel as ChannelData once the binding is ready.
    let mut buf = vec![0u8; 1500];
    for i in 0..5 {
        let msg = format!("ping {i}");
        timeout(TIMEOUT, relay.send_to(msg.as_bytes(), echo))
            .await
            .expect("send_to in time")
            .expect("send_to succeeds");
        let (n, from) = timeout(TIMEOUT, relay.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no echo of {msg:?} within {TIMEOUT:?}"))
            .expect("recv_from succeeds");
        assert_eq!(from, echo);
        assert_eq!(&buf[..n], msg.as_bytes());
    }

    // close() sends Refresh 0 without waiting for the answer (the client still retransmits
    // it until client.close()): the relayed port must be freed.
    relay.close().await.expect("close the relay conn");
    assert!(
        udp_port_closed(relayed).await,
        "the relayed port {relayed} is freed after the client's close()"
    );
    client.close().await.expect("close the client");

    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 1);
    assert_eq!(
        stats.allocations_ended.get("released"),
        Some(&1),
        "close() released the allocation: {stats:?}"
    );
    // At least once: webrtc-rs retransmits a request whose answer is late.
    assert!(
        stats.requests_ok.contains_key("create_permission"),
        "{stats:?}"
    );
    assert!(stats.requests_ok.contains_key("channel_bind"), "{stats:?}");
    assert_eq!(stats.packets_to_peer, 5);
    assert_eq!(stats.packets_to_client, 5);
    let unexpected: Vec<_> = stats
        .requests_failed
        .iter()
        .filter(|(key, _)| !matches!(**key, ("allocate", 401) | ("refresh", 437)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "only the unauthenticated Allocate (and a retransmitted Refresh 0) fail: {unexpected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_client_with_a_wrong_password_cannot_allocate() {
    let server = start_server("").await;
    let mut credential = server.credential("webrtc-rs");
    credential.password = "bm90IHRoZSByaWdodCBwYXNzd29yZA==".to_owned();
    let (client, _) = webrtc_client(server.v4, credential).await;
    let Err(err) = timeout(TIMEOUT, client.allocate())
        .await
        .expect("Allocate answered in time")
    else {
        panic!("Allocate with a wrong password succeeded");
    };
    assert!(err.to_string().contains("401"), "error names 401: {err}");
    client.close().await.expect("close the client");
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 0);
}

/// Creates a webrtc-rs client on 127.0.1.20 talking to `server`; it is listening already.
/// Returns it with its local address.
async fn webrtc_client(
    server: std::net::SocketAddr,
    credential: Credential,
) -> (Client, std::net::SocketAddr) {
    let conn = UdpSocket::bind("127.0.1.20:0")
        .await
        .expect("client socket");
    let local = conn.local_addr().expect("local address");
    let client = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: credential.username,
        password: credential.password,
        // Learnt from the server's 401.
        realm: String::new(),
        software: String::new(),
        // Loopback answers in microseconds; a long RTO keeps a busy machine from retransmitting.
        rto_in_ms: 2000,
        conn: Arc::new(conn),
        vnet: None,
    })
    .await
    .expect("creating the webrtc-rs client");
    client.listen().await.expect("client listens");
    (client, local)
}
