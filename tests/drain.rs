//! Graceful drain over loopback: after the first SIGTERM (here [`Controller::terminate`]) a
//! new Allocate is sent to the alternate server (300 with ALTERNATE-SERVER) or refused (508),
//! a running allocation keeps relaying and refreshing, and the relay stops by itself once its
//! last allocation has ended, or when `server.drain_timeout` has passed.
//!
//! [`Controller::terminate`]: eeaturn::shell::Controller::terminate

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use eeaturn::client;
use eeaturn::stun::attr;
use eeaturn::stun::{Class, Method};

use common::{Peer, Relayed, TurnClient, start_server_with_server_keys};

/// This file's relay ports, out of the other test binaries' way.
const PORTS: &str = "27000-27499";
const ALTERNATE_V4: &str = "127.0.3.1:3478";

#[tokio::test]
async fn an_allocate_during_the_drain_gets_300_with_the_alternate_and_a_running_allocation_relays()
{
    let server = start_server_with_server_keys(
        &format!(
            "drain_timeout = \"30s\"\nalternate_servers = [\"[::1]:3479\", \"{ALTERNATE_V4}\"]\n"
        ),
        Some(PORTS),
        "",
    )
    .await;
    let peer = Peer::bind("127.0.2.1").await;
    let mut running = server.client("127.0.1.1", "alice").await;
    let relayed = running.allocate().await.unwrap().relayed();
    running.channel_bind(0x4001, peer.addr()).await.unwrap();

    server.controller().terminate();
    // The drain starts asynchronously: ask until the answer changes (bounded).
    let mut late = server.client("127.0.1.2", "bob").await;
    let redirect = redirected_allocate(&mut late).await;
    running.send_channel_data(0x4001, b"during the drain").await;
    let (to_peer, from) = peer.recv().await;
    peer.send_to(b"and back", relayed).await;
    let back = running.recv_relayed().await;
    let refreshed = running.refresh(600).await;

    assert_eq!(redirect.class(), Class::Error);
    let error = redirect.error().unwrap();
    assert_eq!(error.code, 300, "{error:?}");
    let alternate = attr::decode_address(
        attr::ALTERNATE_SERVER,
        &redirect.attr(attr::ALTERNATE_SERVER).unwrap(),
    )
    .unwrap();
    assert_eq!(
        alternate,
        ALTERNATE_V4.parse().unwrap(),
        "the IPv4 alternate"
    );
    assert_eq!(to_peer, b"during the drain");
    assert_eq!(from, relayed);
    assert_eq!(
        back,
        Relayed::Channel {
            channel: 0x4001,
            data: b"and back".to_vec()
        }
    );
    assert_eq!(refreshed, Ok(600), "Refresh keeps working while draining");

    running.refresh(0).await.unwrap();
    let stats = server.wait(Duration::from_secs(10)).await;
    assert_eq!(stats.allocations_created, 1);
}

#[tokio::test]
async fn without_alternates_the_drain_answers_508_and_ends_when_the_timeout_passes() {
    let server =
        start_server_with_server_keys("drain_timeout = \"2s\"\n", Some("27500-27599"), "").await;
    let mut running = server.client("127.0.1.3", "carol").await;
    running.allocate().await.unwrap();

    server.controller().terminate();
    let mut late = server.client("127.0.1.4", "dave").await;
    let refused = redirected_allocate(&mut late).await;
    let stats = server.wait(Duration::from_secs(10)).await;

    let error = refused.error().unwrap();
    assert_eq!(error.code, 508, "{error:?}");
    assert!(error.reason.contains("draining"), "{error:?}");
    assert!(refused.attr(attr::ALTERNATE_SERVER).is_none());
    assert_eq!(
        stats.allocations_ended.get("shutdown"),
        Some(&1),
        "the allocation still running at the timeout is ended: {stats:?}"
    );
}

#[tokio::test]
async fn a_second_terminate_stops_at_once() {
    let server =
        start_server_with_server_keys("drain_timeout = \"1h\"\n", Some("27600-27699"), "").await;
    let mut running = server.client("127.0.1.5", "erin").await;
    running.allocate().await.unwrap();

    let control = server.controller();
    control.terminate();
    control.terminate();
    let stats = server.wait(Duration::from_secs(5)).await;

    assert_eq!(stats.allocations_ended.get("shutdown"), Some(&1));
}

/// Sends Allocates (a new client port each time would change the 5-tuple; the same one is
/// fine, since nothing is allocated) until the answer is no longer a success, for at most
/// five seconds; returns that answer.
async fn redirected_allocate(client: &mut TurnClient) -> common::Response {
    for _ in 0..50 {
        let r = client
            .transact(Method::ALLOCATE, &client::add_requested_transport_udp)
            .await;
        if r.class() == Class::Error {
            return r;
        }
        // Allocated before the drain started: release it and ask again.
        client.refresh(0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Allocate still succeeds five seconds after the drain started");
}
