//! Unauthenticated answers over UDP within a budget per source prefix; authenticated answers
//! and stream clients never counted. See `relay/ratelimit.rs` for the table itself.

use super::*;

/// A budget of 1000 bytes at once, refilled at 100 bytes per second.
fn limited() -> TestServer {
    let mut cfg = roomy_config();
    cfg.answer_limit = AnswerLimit {
        rate: 100,
        burst: 1000,
        table_size: 64,
    };
    TestServer::with_config(cfg)
}

/// Sends `n` unauthenticated Allocates from `from` and returns (bytes in, bytes out).
fn flood(ts: &mut TestServer, from: FiveTuple, n: usize) -> (usize, usize) {
    let (mut inb, mut out) = (0, 0);
    for _ in 0..n {
        let tid = ts.next_tid();
        let bytes = Req::allocate().encode(tid, None);
        inb += bytes.len();
        for c in ts.send(from, &bytes) {
            if let Command::SendToClient { bytes, .. } = c {
                out += bytes.len();
            }
        }
    }
    (inb, out)
}

#[test]
fn unauthenticated_answers_stop_at_the_burst_and_bytes_out_stay_below_bytes_in() {
    let mut ts = limited();
    let attacker = ts.client(40001).five_tuple;

    let (inb, out) = flood(&mut ts, attacker, 1000);

    assert!(out <= 1000, "at most the burst: {out} bytes");
    assert!(out > 0, "the first challenges are answered");
    assert!(
        out < inb,
        "bytes out {out} per bytes in {inb} stay below 1 beyond the burst"
    );
    let dropped = ts.server.stats().answers_rate_limited;
    assert!(dropped >= 990, "{dropped} answers dropped");
    // Eleven seconds later the budget is back: burst plus rate × time bounds everything sent.
    ts.advance(secs(11));
    let (_, later) = flood(&mut ts, attacker, 1000);
    assert!(later > 0, "answered again once refilled");
    assert!(out + later <= 1000 + 100 * 11, "{out} + {later} bytes");
}

#[test]
fn a_client_that_authenticates_is_not_slowed_by_a_flood_from_another_address() {
    let mut ts = limited();
    let attacker = ts.client_as("127.0.0.7:40001", "mallory").five_tuple;
    let mut c = ts.client_as("127.0.0.8:40001", "alice");
    flood(&mut ts, attacker, 500);

    ts.allocate(&mut c);
    // Its authenticated requests are never counted: far more than its budget in bytes.
    for _ in 0..200 {
        ts.call(&mut c, &Req::refresh().lifetime(600)).assert_ok();
    }
    ts.permit(&mut c, &["127.0.0.9:5000"]);
}

#[test]
fn an_authenticated_client_keeps_being_served_when_its_own_prefix_is_flooded() {
    // The forged-source case: the flood names the client's own address.
    let mut ts = limited();
    let mut c = ts.client(40001);
    ts.allocate(&mut c);
    let forged = ts.client(40002).five_tuple;
    flood(&mut ts, forged, 500);

    for _ in 0..50 {
        ts.call(&mut c, &Req::refresh().lifetime(600)).assert_ok();
    }
}

#[test]
fn binding_answers_count_against_the_budget() {
    let mut ts = limited();
    let from = ts.client(40001).five_tuple;
    let mut answered = 0;
    for _ in 0..100 {
        let tid = ts.next_tid();
        let bytes = Req::new(Method::BINDING).encode(tid, None);
        answered += ts.send(from, &bytes).len();
    }
    assert!((1..100).contains(&answered), "{answered} of 100 answered");
}

#[test]
fn stream_clients_are_not_counted() {
    let mut ts = limited();
    let mut from = ts.client(40001).five_tuple;
    from.transport = Transport::Tcp;
    let mut answered = 0;
    for _ in 0..100 {
        let tid = ts.next_tid();
        let bytes = Req::allocate().encode(tid, None);
        answered += ts.send(from, &bytes).len();
    }
    assert_eq!(answered, 100, "a TCP handshake proved the address");
}

#[test]
fn refused_sources_get_no_binding_answer_and_their_refusals_share_the_budget() {
    let mut ts = limited();
    let refused = ts.client_as("127.0.9.1:40001", "eve").five_tuple;
    let tid = ts.next_tid();
    let bytes = Req::new(Method::BINDING).encode(tid, None);
    assert!(ts.send(refused, &bytes).is_empty(), "no Binding answer");
    assert_eq!(ts.server.stats().dropped.get("refused-source"), Some(&1));

    let (inb, out) = flood(&mut ts, refused, 200);
    assert!(out <= 1000 && out < inb, "{out} out for {inb} in");
    // Only answered refusals become events: at most the burst's worth.
    let denied = ts
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::Denied { .. }))
        .count();
    assert!(
        (1..=1000 / 60).contains(&denied),
        "{denied} refusals reported"
    );
}
