//! Kernel paths: the core announces exactly the channels it relays, takes them back on every
//! expiry, Refresh 0, end and policy refusal, and folds the kernel's counters into the
//! allocation's traffic and evidence. The property test drives random operations against a
//! model of the kernel's map that only the core's commands change.

use super::*;
use crate::relay::AllocationId;

const PEERS: [&str; 3] = ["127.0.0.2:9000", "127.0.0.3:9000", "127.0.0.4:9001"];
const CLIENT_PORTS: [u16; 3] = [40001, 40002, 40003];
const CHANNELS: [u16; 2] = [0x4000, 0x7FFF];

fn traffic(to_peer: (u64, u64), to_client: (u64, u64)) -> TrafficCounters {
    TrafficCounters {
        packets_to_peer: to_peer.0,
        bytes_to_peer: to_peer.1,
        packets_to_client: to_client.0,
        bytes_to_client: to_client.1,
    }
}

/// The one kernel path in the model.
#[track_caller]
fn only_path(ts: &TestServer) -> KernelPath {
    assert_eq!(ts.kernel.len(), 1, "{:?}", ts.kernel);
    *ts.kernel.first().unwrap()
}

#[test]
fn a_bound_channel_is_installed_and_refresh_0_removes_it() {
    let mut ts = TestServer::new().kernel_paths();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    assert!(ts.kernel.is_empty(), "no channel, no path");
    ts.permit(&mut c, &["127.0.0.2:1"]);
    assert!(
        ts.kernel.is_empty(),
        "a permission alone is a Send/Data path, not offloaded"
    );

    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");

    let p = only_path(&ts);
    assert_eq!(
        (p.client, p.channel.get(), p.relay, p.peer),
        (c.five_tuple, 0x4000, relayed, addr("127.0.0.2:9000"))
    );
    // Announced before the success response: a client that sends at once finds it.
    let install = ts
        .log
        .iter()
        .rposition(|c| matches!(c, Command::InstallKernelPath(_)));
    let answer = ts
        .log
        .iter()
        .rposition(|c| matches!(c, Command::SendToClient { .. }));
    assert!(install < answer, "{:?}", ts.log);
    ts.call(&mut c, &Req::refresh().lifetime(0)).assert_ok();
    assert!(ts.kernel.is_empty());
}

#[test]
fn expiry_of_the_permission_or_the_channel_removes_the_path() {
    let mut ts = TestServer::new().kernel_paths();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    only_path(&ts);

    // The permission (300 s) expires before the channel (600 s).
    ts.advance(secs(300));
    assert!(ts.kernel.is_empty());
    assert!(ts.client_input(&c, &channel_data(0x4000, b"x")).is_none());

    // A new permission makes the still-bound channel usable again.
    ts.permit(&mut c, &["127.0.0.2:1"]);
    only_path(&ts);
    ts.advance(secs(300));
    assert!(ts.kernel.is_empty(), "the channel expired");
}

#[test]
fn a_reload_that_refuses_the_peer_removes_the_path_at_the_next_request() {
    let mut ts = TestServer::new().kernel_paths();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    ts.server.replace_policy(refusing(0));

    ts.call(&mut c, &Req::refresh());

    assert!(ts.kernel.is_empty());
    assert!(ts.client_input(&c, &channel_data(0x4000, b"x")).is_none());
}

#[test]
fn kernel_counters_reach_the_ledger_the_stats_and_the_end_event() {
    let mut ts = TestServer::new().kernel_paths();
    let mut c = ts.client(40001);
    let relayed = ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    let p = only_path(&ts);
    // One packet in user space (before the program was attached, say), the rest in the kernel.
    ts.client_input(&c, &channel_data(0x4000, b"ping")).unwrap();
    ts.server
        .handle_kernel_traffic(&p, traffic((3, 300), (2, 50)));
    ts.kernel_unread.insert(p, traffic((1, 10), (0, 0)));
    ts.take_events();

    ts.call(&mut c, &Req::refresh().lifetime(0)).assert_ok();

    let expected = traffic((5, 314), (2, 50));
    let ended: Vec<_> = ts
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::AllocationEnded { traffic, peers, .. } => Some((traffic, peers)),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    let (total, peers) = &ended[0];
    assert_eq!(*total, expected);
    assert_eq!(peers.len(), 1);
    assert_eq!(
        (peers[0].peer, peers[0].traffic),
        (ip("127.0.0.2"), expected)
    );
    let stats = ts.server.stats();
    assert_eq!((stats.packets_to_peer, stats.bytes_to_peer), (5, 314));
    assert_eq!((stats.packets_to_client, stats.bytes_to_client), (2, 50));
    let udp = stats.relayed_by_transport[Transport::Udp.index()];
    assert_eq!((udp.packets_to_peer, udp.bytes_to_client), (5, 50));
    assert_eq!(stats.relayed_in_kernel, traffic((4, 310), (2, 50)));
    assert!(ts.server.ending.is_empty());
    // The allocation's relay socket is gone too: nothing of it is left to fold into.
    assert!(
        ts.peer_input(relayed, addr("127.0.0.2:9000"), b"x")
            .is_none()
    );
}

#[test]
fn the_end_event_waits_for_every_path_and_comes_once() {
    let mut ts = TestServer::new().kernel_paths();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    ts.bind_channel(&mut c, 0x4001, "127.0.0.3:9000");
    assert_eq!(ts.kernel.len(), 2);
    ts.take_events();

    // The shell has not carried out the removals yet: no end event.
    ts.server.end_all(EndReason::Shutdown, ts.now);
    let mut removals = Vec::new();
    while let Some(cmd) = ts.server.poll_command() {
        if let Command::RemoveKernelPath(p) = cmd {
            removals.push(p);
        }
    }
    assert_eq!(removals.len(), 2);
    assert!(ts.server.poll_event().is_none());
    ts.server
        .handle_kernel_path_removed(&removals[0], traffic((1, 1), (0, 0)));
    assert!(ts.server.poll_event().is_none());
    ts.server
        .handle_kernel_path_removed(&removals[1], traffic((0, 0), (1, 2)));
    let Some(Event::AllocationEnded { traffic: t, .. }) = ts.server.poll_event() else {
        panic!("the end comes once every path is reported");
    };
    assert_eq!(t, traffic((1, 1), (1, 2)));
    assert!(ts.server.poll_event().is_none());
}

#[test]
fn a_path_removed_in_the_same_turn_as_the_end_still_counts() {
    // The permission (300 s), the channel and the allocation (600 s) all expire in one
    // `handle_timeout`: the path is removed before the allocation ends, and its last counters
    // arrive after.
    let mut ts = TestServer::new().kernel_paths();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    let p = only_path(&ts);
    ts.kernel_unread.insert(p, traffic((2, 20), (1, 7)));
    ts.take_events();

    ts.advance(secs(601));

    let ended: Vec<_> = ts
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::AllocationEnded { traffic, .. } => Some(traffic),
            _ => None,
        })
        .collect();
    assert_eq!(ended, [traffic((2, 20), (1, 7))]);
}

#[test]
fn stream_clients_have_no_kernel_paths() {
    let mut ts = TestServer::new().kernel_paths();
    let mut c = ts.client(40001);
    c.five_tuple.transport = Transport::Tcp;
    ts.allocate(&mut c);
    ts.bind_channel(&mut c, 0x4000, "127.0.0.2:9000");
    assert!(ts.kernel.is_empty());
}

/// [`policy`], refusing `PEERS[i]` too.
fn refusing(i: usize) -> Policy {
    let peer: SocketAddr = PEERS[i].parse().unwrap();
    Policy::dangerous_without_geo(
        vec![
            "127.0.5.0/24".parse().unwrap(),
            format!("{}/32", peer.ip()).parse().unwrap(),
        ],
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        vec!["127.0.9.0/24".parse().unwrap()],
    )
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(usize),
        Permit(usize, usize),
        Bind(usize, usize, usize),
        Refresh(usize, u32),
        Advance(u64),
        Reload(Option<usize>),
        Kernel(usize, u64),
        Fold,
    }

    fn op() -> impl Strategy<Value = Op> {
        let client = 0..CLIENT_PORTS.len();
        let peer = 0..PEERS.len();
        prop_oneof![
            client.clone().prop_map(Op::Allocate),
            (client.clone(), peer.clone()).prop_map(|(c, p)| Op::Permit(c, p)),
            (client.clone(), 0..CHANNELS.len(), peer.clone())
                .prop_map(|(c, n, p)| Op::Bind(c, n, p)),
            (client.clone(), prop_oneof![Just(0u32), Just(600)])
                .prop_map(|(c, l)| Op::Refresh(c, l)),
            prop_oneof![
                Just(1u64),
                Just(60),
                Just(200),
                Just(299),
                Just(301),
                Just(601)
            ]
            .prop_map(Op::Advance),
            proptest::option::of(peer).prop_map(Op::Reload),
            (client, 1u64..5).prop_map(|(c, n)| Op::Kernel(c, n)),
            Just(Op::Fold),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn the_kernel_never_holds_a_path_the_core_refuses(ops in proptest::collection::vec(op(), 1..40)) {
            let mut ts = TestServer::with_config(roomy_config()).kernel_paths();
            let mut clients: Vec<Client> = CLIENT_PORTS.iter().map(|&p| ts.client(p)).collect();
            // What the kernel relayed, per allocation: must all reach the end events.
            let mut relayed_in_kernel: BTreeMap<AllocationId, TrafficCounters> = BTreeMap::new();
            let mut ended: BTreeMap<AllocationId, TrafficCounters> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Allocate(i) => {
                        ts.call(&mut clients[i], &Req::allocate());
                    }
                    Op::Permit(i, p) => {
                        let peer: SocketAddr = PEERS[p].parse().unwrap();
                        ts.call(&mut clients[i], &Req::permission(&[&format!("{}:1", peer.ip())]));
                    }
                    Op::Bind(i, n, p) => {
                        ts.call(&mut clients[i], &Req::channel_bind(CHANNELS[n], PEERS[p]));
                    }
                    Op::Refresh(i, l) => {
                        ts.call(&mut clients[i], &Req::refresh().lifetime(l));
                    }
                    Op::Advance(s) => {
                        ts.advance(secs(s));
                    }
                    Op::Reload(refused) => {
                        ts.server.replace_policy(refused.map_or_else(policy, refusing));
                    }
                    Op::Kernel(i, n) => {
                        // The "kernel" relays n packets of 10 bytes each way on the client's
                        // first path, if it has one.
                        let five = clients[i].five_tuple;
                        if let Some(p) = ts.kernel.iter().find(|p| p.client == five).copied() {
                            let t = traffic((n, 10 * n), (n, 10 * n));
                            ts.kernel_unread.entry(p).or_default().add(&t);
                            relayed_in_kernel.entry(p.id).or_default().add(&t);
                        }
                    }
                    Op::Fold => {
                        for (p, t) in std::mem::take(&mut ts.kernel_unread) {
                            ts.server.handle_kernel_traffic(&p, t);
                        }
                    }
                }
                ts.drain();
                for e in ts.take_events() {
                    if let Event::AllocationEnded { id, traffic, .. } = e {
                        prop_assert!(ended.insert(id, traffic).is_none(), "ended twice");
                    }
                }
                prop_assert!(ts.server.ending.is_empty(), "an end waits for nothing");
                check_map(&mut ts, &clients)?;
            }
            // No user-space relaying happened but the probes of `check_map` (4 bytes each way,
            // one packet each): what the kernel relayed is at most the difference.
            ts.server.end_all(EndReason::Shutdown, ts.now);
            ts.drain();
            for e in ts.take_events() {
                if let Event::AllocationEnded { id, traffic, .. } = e {
                    prop_assert!(ended.insert(id, traffic).is_none(), "ended twice");
                }
            }
            prop_assert!(ts.kernel.is_empty(), "every path removed at the end");
            for (id, k) in relayed_in_kernel {
                let total = ended.get(&id).copied().unwrap_or_default();
                prop_assert!(total.packets_to_peer >= k.packets_to_peer);
                prop_assert_eq!(
                    (total.bytes_to_peer - k.bytes_to_peer) % 4, 0,
                    "the kernel's bytes are all there, beside the probes' 4-byte payloads"
                );
                prop_assert_eq!(
                    total.bytes_to_peer - k.bytes_to_peer,
                    4 * (total.packets_to_peer - k.packets_to_peer)
                );
                prop_assert_eq!(
                    total.bytes_to_client - k.bytes_to_client,
                    4 * (total.packets_to_client - k.packets_to_client)
                );
            }
        }
    }

    /// Every path in the model is one the core relays ChannelData on, both ways, to the same
    /// relay address and peer; and every channel the core relays on is in the model.
    fn check_map(ts: &mut TestServer, clients: &[Client]) -> Result<(), TestCaseError> {
        for p in ts.kernel.clone() {
            let c = clients.iter().find(|c| c.five_tuple == p.client).unwrap();
            let t = ts.client_input(c, &channel_data(p.channel.get(), b"prob"));
            prop_assert_eq!(
                t.map(|t| (t.relay, t.peer)),
                Some((p.relay, p.peer)),
                "the kernel holds {:?}, which the core refuses",
                p
            );
            let back = ts.peer_input(p.relay, p.peer, b"back");
            let mut framed = p.channel.get().to_be_bytes().to_vec();
            framed.extend_from_slice(&[0, 4]);
            framed.extend_from_slice(b"back");
            prop_assert_eq!(back, Some((p.client, framed)));
        }
        for c in clients {
            for &n in &CHANNELS {
                if let Some(t) = ts.client_input(c, &channel_data(n, b"prob")) {
                    let installed = ts.kernel.iter().any(|p| {
                        (p.client, p.channel.get(), p.relay, p.peer)
                            == (c.five_tuple, n, t.relay, t.peer)
                    });
                    prop_assert!(
                        installed,
                        "the core relays channel {:#x} of {:?} but the kernel has no path",
                        n,
                        c.five_tuple
                    );
                }
            }
        }
        Ok(())
    }
}
