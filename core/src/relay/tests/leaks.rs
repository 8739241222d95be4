//! Resource leaks on reservation paths.

use super::*;

/// A datagram can arrive after a reservation's deadline but before the shell calls
/// `handle_timeout`. The expired token must be refused without losing the reserved port.
#[test]
fn expired_reservation_token_does_not_leak_the_reserved_port() {
    let mut cfg = roomy_config();
    cfg.relay.ports = 50000..=50001;
    let mut ts = TestServer::with_config(cfg);
    let mut alice = ts.client(40001);
    let mut bob = ts.client(40002);
    let mut carol = ts.client(40003);
    let r = ts.call(&mut alice, &Req::allocate().attr(attr::EVEN_PORT, &[0x80]));
    let token = r.get(attr::RESERVATION_TOKEN).unwrap();

    // The reservation (30 s) runs out, and the token arrives before the timer is handled.
    ts.now.mono += secs(31);
    ts.now.wall += secs(31);
    let late = ts.call(
        &mut bob,
        &Req::allocate().attr(attr::RESERVATION_TOKEN, &token),
    );
    ts.advance(secs(0));
    ts.call(&mut alice, &Req::refresh().lifetime(0)).assert_ok();

    late.assert_error(508);
    // Both ports of the range are free again.
    ts.allocate(&mut bob);
    ts.allocate(&mut carol);
}

/// A token-holder's Allocate that fails after the token was taken (here: a malformed
/// LIFETIME) must not lose the reserved port.
#[test]
fn failed_allocate_with_a_reservation_token_does_not_leak_the_reserved_port() {
    let mut cfg = roomy_config();
    cfg.relay.ports = 50000..=50001;
    let mut ts = TestServer::with_config(cfg);
    let mut alice = ts.client(40001);
    let mut bob = ts.client(40002);
    let mut carol = ts.client(40003);
    let r = ts.call(&mut alice, &Req::allocate().attr(attr::EVEN_PORT, &[0x80]));
    let token = r.get(attr::RESERVATION_TOKEN).unwrap();
    let bad = Req::allocate()
        .attr(attr::RESERVATION_TOKEN, &token)
        .attr(attr::LIFETIME, &[0, 0, 1]);

    let refused = ts.call(&mut bob, &bad);
    ts.advance(secs(31)); // the reservation would have run out by now anyway
    ts.call(&mut alice, &Req::refresh().lifetime(0)).assert_ok();

    refused.assert_error(400);
    ts.allocate(&mut bob);
    ts.allocate(&mut carol);
}

/// Timer entries are not removed when their allocation ends; without compaction an allocation
/// set up and released in a loop left one entry per allocation (and per permission and
/// channel) for a whole lifetime: 190 MB after ten minutes of the soak (tests/soak/soak.sh).
#[test]
fn timer_entries_of_released_allocations_do_not_pile_up() {
    let mut ts = TestServer::with_config(roomy_config());
    let mut peak = 0;
    for i in 0..12_000u16 {
        let mut c = ts.client(20_000 + i);
        ts.allocate(&mut c);
        ts.permit(&mut c, &["127.0.2.1:9000"]);
        if i % 4 == 0 {
            ts.bind_channel(&mut c, 0x4000, "127.0.2.1:9000");
        }
        ts.call(&mut c, &Req::refresh().lifetime(0)).assert_ok();
        peak = peak.max(ts.server.timers.len());
    }
    assert_eq!(ts.server.allocation_count(), 0);
    // Without compaction: about 12,000 × 2.25 entries.
    assert!(
        peak <= 2 * crate::relay::table::Timers::MIN_COMPACTION,
        "{peak} timer entries for no live allocation"
    );
}

/// Compaction drops only entries that can do nothing: every live allocation, permission and
/// channel still expires on time, however often it was refreshed in between.
#[test]
fn compaction_keeps_every_live_deadline() {
    let mut ts = TestServer::with_config(roomy_config());
    let mut live = Vec::new();
    for port in 40_001..40_006u16 {
        let mut c = ts.client(port);
        ts.allocate(&mut c);
        ts.permit(&mut c, &["127.0.2.1:9000"]);
        ts.bind_channel(&mut c, 0x4000, "127.0.2.2:9000");
        live.push(c);
    }
    // Refreshes leave superseded entries; churn forces several compactions meanwhile.
    for round in 0..3u16 {
        for c in &mut live {
            ts.call(c, &Req::refresh()).assert_ok();
            ts.permit(c, &["127.0.2.1:9000"]);
        }
        for i in 0..3_000u16 {
            let mut c = ts.client(20_000 + round * 3_000 + i);
            ts.allocate(&mut c);
            ts.call(&mut c, &Req::refresh().lifetime(0)).assert_ok();
        }
        ts.advance(secs(60));
    }
    assert_eq!(ts.server.allocation_count(), live.len());
    // The channels (10 min from their bind) and permissions (5 min from the last refresh) run
    // out: relaying to those peers stops.
    ts.advance(secs(301));
    for c in &live {
        let data = [0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4];
        assert!(ts.client_input(c, &data).is_none(), "channel still bound");
    }
    // The allocations (10 min from the last refresh) expire.
    ts.advance(secs(600));
    assert_eq!(ts.server.allocation_count(), 0);
}
