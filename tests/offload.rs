//! The kernel fast path (`relay.offload`) end to end: a relay with `offload = "required"`
//! relays ChannelData over loopback through its XDP program both ways, the kernel's counters
//! come back into the relay's, and Refresh 0 takes the path out of the kernel. A second relay
//! on the same `lo` falls back to user space under `"auto"` and refuses to start under
//! `"required"`. An ignored test (it waits 300 s) checks that an expired permission takes the
//! path out of the kernel on time.
//!
//! It runs in a network namespace of its own (its own `lo`, where the program is attached in
//! generic mode), so no other process's loopback traffic meets the program, and nothing leaves
//! the namespace. It needs root (network namespaces, BPF); without root, `ip`, or a kernel that
//! loads the program, it prints why and passes without testing anything.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Peer, Relayed, TestServer, try_start_server_with_relay_keys};
use nix::sched::CloneFlags;

/// Datagrams sent each way.
const COUNT: u64 = 50;
/// Payload size of each (a multiple of 4: no question of padding).
const LEN: usize = 100;

#[test]
fn channel_data_goes_through_the_kernel_and_every_byte_is_counted() {
    in_own_namespace(scenario);
}

/// Runs `scenario` on a thread of its own in a new network namespace (with `lo` up), and
/// prints why when it cannot be tested here: not root, no namespace, no `ip`, or (the
/// scenario's `Err`) no fast path.
fn in_own_namespace<F, Fut>(scenario: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>>,
{
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP tests/offload.rs: needs root (a network namespace and BPF)");
        return;
    }
    // The namespace is per thread: the relay's threads, started from this one, live in it.
    let result = std::thread::spawn(move || {
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWNET) {
            return Err(format!("cannot create a network namespace: {e}"));
        }
        match std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
        {
            Ok(s) if s.success() => {}
            other => return Err(format!("cannot bring up lo with ip(8): {other:?}")),
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(scenario())
    })
    .join()
    .expect("the scenario does not panic");
    if let Err(reason) = result {
        eprintln!("SKIP tests/offload.rs: {reason}");
    }
}

/// A permission's lifetime: 300 s, fixed by RFC 8656 §9.
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);

/// An expired permission takes its channel's path out of the kernel on time: 5 s before the
/// permission's 300 s run out ChannelData still goes through the kernel both ways, 1 s after
/// nothing passes either way. The core's expiry runs on its own deadline (the worker sleeps
/// until `poll_timeout`), so "on time" is the resolution asked for. Waits out the 300 s, so
/// it is ignored by default: `cargo test --release --test offload -- --ignored` (root).
#[test]
#[ignore = "waits out a permission's 300 s; run with --ignored as root"]
fn an_expired_permission_takes_the_path_out_of_the_kernel() {
    in_own_namespace(|| async {
        let server = start_required().await?;
        let peer = Peer::bind("127.0.2.1").await;
        let mut client = server.client("127.0.1.1", "alice").await;
        let relayed = client.allocate().await.expect("Allocate").relayed();
        client
            .channel_bind(CHANNEL, peer.addr())
            .await
            .expect("ChannelBind");
        // The permission was installed before this instant: it expires before `bound` + 300 s.
        let bound = tokio::time::Instant::now();
        exchange(&mut client, &peer, relayed, 0).await;
        tokio::time::sleep_until(bound + PERMISSION_LIFETIME - Duration::from_secs(5)).await;
        exchange(&mut client, &peer, relayed, 1).await;
        tokio::time::sleep_until(bound + PERMISSION_LIFETIME + Duration::from_secs(1)).await;
        client.send_channel_data(CHANNEL, &payload(2)).await;
        assert!(
            peer.try_recv(Duration::from_millis(500)).await.is_none(),
            "ChannelData reached the peer after the permission expired"
        );
        peer.send_to(&payload(3), relayed).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(500), client.recv_relayed())
                .await
                .is_err(),
            "the peer's datagram reached the client after the permission expired"
        );
        let stats = server.stop().await;
        let k = stats.relayed_in_kernel;
        assert_eq!(
            (k.packets_to_peer, k.packets_to_client),
            (2, 2),
            "both exchanges while the permission lived went through the kernel"
        );
        assert_eq!((stats.packets_to_peer, stats.packets_to_client), (2, 2));
        Ok(())
    });
}

/// Starts a relay with `offload = "required"`; `Err(reason)` when the fast path cannot be
/// loaded here.
async fn start_required() -> Result<TestServer, String> {
    match try_start_server_with_relay_keys("offload = \"required\"\n").await {
        Ok(s) => Ok(s),
        Err(e) => {
            let e = format!("{e:#}");
            assert!(
                e.contains("kernel fast path is not available"),
                "the relay fails to start for another reason: {e}"
            );
            Err(e)
        }
    }
}

/// The client's channel in the expiry test.
const CHANNEL: u16 = 0x4001;

/// One ChannelData on `channel` to the peer and the `i`-th payload back, each checked.
async fn exchange_on(
    channel: u16,
    client: &mut common::TurnClient,
    peer: &Peer,
    relayed: SocketAddr,
    i: u64,
) {
    let data = payload(i);
    client.send_channel_data(channel, &data).await;
    assert_eq!(peer.recv().await, (data.clone(), relayed));
    peer.send_to(&data, relayed).await;
    assert_eq!(
        client.recv_relayed().await,
        Relayed::Channel { channel, data }
    );
}

/// [`exchange_on`] on [`CHANNEL`].
async fn exchange(client: &mut common::TurnClient, peer: &Peer, relayed: SocketAddr, i: u64) {
    exchange_on(CHANNEL, client, peer, relayed, i).await;
}

/// Returns `Err(reason)` only when the fast path cannot be loaded here.
async fn scenario() -> Result<(), String> {
    let server = start_required().await?;
    // A second relay on the same lo: only one generic XDP program fits an interface, so with
    // "auto" it starts and relays in user space, and with "required" it refuses to start,
    // naming the attach. The first relay's program passes the second's traffic untouched.
    let second = try_start_server_with_relay_keys("offload = \"auto\"\n")
        .await
        .expect("a second relay with offload = \"auto\" starts");
    let third = try_start_server_with_relay_keys("offload = \"required\"\n").await;
    let Err(e) = third else {
        panic!("a third relay with offload = \"required\" started on a taken lo");
    };
    assert!(format!("{e:#}").contains("cannot attach"), "{e:#}");
    relay_in_user_space(second).await;
    relay_through_the_kernel(server).await;
    Ok(())
}

/// A relay whose fast path is unavailable relays the same ChannelData in user space.
async fn relay_in_user_space(server: TestServer) {
    let peer = Peer::bind("127.0.2.2").await;
    let mut client = server.client("127.0.1.2", "bob").await;
    let relayed = client.allocate().await.expect("Allocate").relayed();
    client
        .channel_bind(0x4002, peer.addr())
        .await
        .expect("ChannelBind");
    for i in 0..5 {
        exchange_on(0x4002, &mut client, &peer, relayed, i).await;
    }
    let stats = server.stop().await;
    assert_eq!((stats.packets_to_peer, stats.packets_to_client), (5, 5));
    let k = stats.relayed_in_kernel;
    assert_eq!(
        (k.packets_to_peer, k.packets_to_client),
        (0, 0),
        "the relay without the fast path relayed nothing in the kernel"
    );
}

async fn relay_through_the_kernel(server: TestServer) {
    let peer = Peer::bind("127.0.2.1").await;
    let mut client = server.client("127.0.1.1", "alice").await;
    let relayed = client.allocate().await.expect("Allocate").relayed();
    client
        .channel_bind(0x4001, peer.addr())
        .await
        .expect("ChannelBind");

    for i in 0..COUNT {
        exchange_on(0x4001, &mut client, &peer, relayed, i).await;
    }

    assert_eq!(client.refresh(0).await, Ok(0));
    // The path left the kernel with the allocation: ChannelData now reaches user space,
    // which has no allocation for it, and nothing reaches the peer.
    client.send_channel_data(0x4001, &payload(COUNT)).await;
    assert!(
        peer.try_recv(Duration::from_millis(300)).await.is_none(),
        "the kernel relayed after Refresh 0"
    );

    let stats = server.stop().await;
    let bytes = COUNT * LEN as u64;
    assert_eq!(
        (stats.packets_to_peer, stats.bytes_to_peer),
        (COUNT, bytes),
        "every byte relayed to the peer is counted once"
    );
    assert_eq!(
        (stats.packets_to_client, stats.bytes_to_client),
        (COUNT, bytes)
    );
    let k = stats.relayed_in_kernel;
    assert_eq!(
        (
            k.packets_to_peer,
            k.bytes_to_peer,
            k.packets_to_client,
            k.bytes_to_client
        ),
        (COUNT, bytes, COUNT, bytes),
        "the kernel relayed all of it"
    );
}

/// The `i`-th payload: `LEN` bytes that differ from one datagram to the next.
fn payload(i: u64) -> Vec<u8> {
    (0..LEN).map(|j| (i as usize + j) as u8).collect()
}
