//! Binding requests: XOR-MAPPED-ADDRESS and unknown attributes.

use super::*;

#[test]
fn binding_answers_with_the_client_address_and_a_valid_fingerprint() {
    let mut ts = TestServer::new();
    let from = five_tuple("127.0.0.1:40001");
    let tid = ts.next_tid();

    let cmds = ts.send(from, &Req::new(Method::BINDING).encode(tid, None));

    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let r = response(&cmds);
    r.assert_ok();
    let m = r.msg();
    assert_eq!(m.method(), Method::BINDING);
    assert_eq!(m.transaction_id(), tid);
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(from.client));
    assert!(!m.has_integrity());
    let n = r.0.len();
    assert_eq!(
        &r.0[n - 8..n - 4],
        &[0x80, 0x28, 0x00, 0x04],
        "FINGERPRINT comes last"
    );
    let crc = u32::from_be_bytes(<[u8; 4]>::try_from(&r.0[n - 4..]).unwrap());
    assert_eq!(crc, fingerprint(&r.0, n - 8));
    assert_eq!(ts.server.stats().requests_ok.get("binding"), Some(&1));
}

#[test]
fn binding_with_unknown_comprehension_required_attribute_is_420() {
    let mut ts = TestServer::new();
    let from = five_tuple("127.0.0.1:40001");
    let req = Req::new(Method::BINDING).attr(0x0031, &[1, 2, 3, 4]);

    let r = ts.unauthenticated(from, &req);

    r.assert_error(420);
    assert_eq!(r.msg().method(), Method::BINDING);
    assert_eq!(r.get(attr::UNKNOWN_ATTRIBUTES), Some(vec![0x00, 0x31]));
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), None);
}

#[test]
fn binding_ignores_unknown_comprehension_optional_attribute() {
    let mut ts = TestServer::new();
    let from = five_tuple("127.0.0.1:40001");
    let req = Req::new(Method::BINDING).attr(0xC0DE, b"whatever");

    let r = ts.unauthenticated(from, &req);

    r.assert_ok();
    assert_eq!(r.xor(attr::XOR_MAPPED_ADDRESS), Some(from.client));
    assert_eq!(r.get(attr::UNKNOWN_ATTRIBUTES), None);
}
