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
