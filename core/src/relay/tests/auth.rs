//! The long-term credential mechanism: challenges, nonces, password algorithms, secrets.

use super::*;

#[test]
fn request_without_integrity_is_challenged_with_realm_nonce_and_algorithms() {
    let mut ts = TestServer::new();
    let from = five_tuple("127.0.0.1:40001");
    let tid = ts.next_tid();

    let cmds = ts.send(from, &Req::allocate().encode(tid, None));

    assert_eq!(
        cmds.len(),
        1,
        "no relay is bound for an unauthenticated request"
    );
    let r = response(&cmds);
    r.assert_error(401);
    assert_eq!(r.get(attr::REALM), Some(REALM.as_bytes().to_vec()));
    let nonce = r.nonce().expect("a 401 carries NONCE");
    assert!(nonce.starts_with("obMatJos2"), "{nonce}");
    assert_eq!(
        r.get(attr::PASSWORD_ALGORITHMS),
        Some(PASSWORD_ALGORITHMS_OFFER.to_vec())
    );
    assert!(!r.msg().has_integrity());
    assert_eq!(ts.server.allocation_count(), 0);
    assert!(ts.take_events().is_empty());
    assert_eq!(auth_failures(&ts), [("no-credentials", 1)]);
}

#[test]
fn wrong_password_is_401() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    c.creds.password = "not-the-password".to_owned();

    let cmds = ts.exchange(&mut c, &Req::allocate());

    let r = response(&cmds);
    r.assert_error(401);
    assert!(r.nonce().is_some());
    assert!(!r.msg().has_integrity());
    assert!(bind_requests(&cmds).is_empty());
    assert_eq!(ts.server.allocation_count(), 0);
    // The exchange's first round trip is the challenge.
    assert_eq!(
        auth_failures(&ts),
        [("bad-password", 1), ("no-credentials", 1)]
    );
}

#[test]
fn expired_rest_username_is_401() {
    let mut ts = TestServer::new();
    let signer = Secrets::parse(SECRET).unwrap();
    let expired = format!("{}:alice", WALL_START - 60);
    let valid = format!("{}:alice", WALL_START + 60);
    let mut old = ts.client_with("127.0.0.1:40001", &expired, &signer);
    let mut fresh = ts.client_with("127.0.0.1:40002", &valid, &signer);

    let refused = response(&ts.exchange(&mut old, &Req::allocate()));
    let accepted = response(&ts.exchange(&mut fresh, &Req::allocate()));

    refused.assert_error(401);
    assert!(refused.nonce().is_some());
    accepted.assert_ok();
    assert_eq!(ts.server.allocation_count(), 1);
}

#[test]
fn auth_failures_are_counted_by_reason() {
    let mut ts = TestServer::new();
    let signer = Secrets::parse(SECRET).unwrap();
    let mut expired = ts.client_with(
        "127.0.0.1:40001",
        &format!("{}:a", WALL_START - 60),
        &signer,
    );
    let mut malformed = ts.client_with("127.0.0.1:40002", "alice", &signer);
    let mut elsewhere = ts.client(40003);
    elsewhere.creds.realm = "elsewhere.test".to_owned();

    let _ = ts.exchange(&mut expired, &Req::allocate());
    let _ = ts.exchange(&mut malformed, &Req::allocate());
    let _ = ts.exchange(&mut elsewhere, &Req::allocate());

    assert_eq!(
        auth_failures(&ts),
        [
            ("bad-username", 1),
            ("expired", 1),
            ("no-credentials", 3),
            ("wrong-realm", 1)
        ]
    );
    for reason in ts.server.stats().auth_failures.keys() {
        assert!(
            crate::relay::AUTH_FAILURE_REASONS.contains(reason),
            "{reason}"
        );
    }
}

fn auth_failures(ts: &TestServer) -> Vec<(&'static str, u64)> {
    ts.server
        .stats()
        .auth_failures
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect()
}

#[test]
fn username_expiring_beyond_max_credential_ttl_is_401() {
    let mut ts = TestServer::new();
    let signer = Secrets::parse(SECRET).unwrap();
    // max_credential_ttl is one day; the server tolerates a few minutes of issuer clock skew.
    let too_long = format!("{}:alice", WALL_START + 86_400 + 3_600);
    let at_max = format!("{}:alice", WALL_START + 86_400);
    let mut greedy = ts.client_with("127.0.0.1:40001", &too_long, &signer);
    let mut fair = ts.client_with("127.0.0.1:40002", &at_max, &signer);

    let refused = response(&ts.exchange(&mut greedy, &Req::allocate()));
    let accepted = response(&ts.exchange(&mut fair, &Req::allocate()));

    refused.assert_error(401);
    accepted.assert_ok();
}

#[test]
fn malformed_username_is_401() {
    let mut ts = TestServer::new();
    let signer = Secrets::parse(SECRET).unwrap();
    for (port, username) in [
        (40001, "alice"),
        (40002, "alice:1700003600"),
        (40003, ":alice"),
    ] {
        // The password is the correct HMAC of the malformed name: only its form is wrong.
        let mut c = ts.client_with(&format!("127.0.0.1:{port}"), username, &signer);

        let r = response(&ts.exchange(&mut c, &Req::allocate()));

        r.assert_error(401);
        assert!(r.nonce().is_some(), "{username}");
    }
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn wrong_realm_is_401() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    // The key is consistent with the wrong realm, so only the realm differs.
    c.creds.realm = "elsewhere.test".to_owned();

    let r = response(&ts.exchange(&mut c, &Req::allocate()));

    r.assert_error(401);
    assert_eq!(r.get(attr::REALM), Some(REALM.as_bytes().to_vec()));
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn integrity_without_nonce_is_400() {
    let mut ts = TestServer::new();
    let c = ts.client(40001);
    let mut auth = c.auth();
    auth.nonce = None;
    let tid = ts.next_tid();

    let r = response(&ts.send(c.five_tuple, &Req::allocate().encode(tid, Some(&auth))));

    r.assert_error(400);
    assert_eq!(r.nonce(), None, "a 400 is not a challenge");
    assert_eq!(auth_failures(&ts), [("malformed", 1)]);
    assert_eq!(r.get(attr::REALM), None);
    assert!(!r.msg().has_integrity());
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn stale_nonce_is_438_with_a_fresh_nonce_that_works() {
    let mut ts = TestServer::new();
    let mut early = ts.client(40001);
    let mut late = ts.client(40002);
    ts.fetch_nonce(&mut early, Method::ALLOCATE);
    let old = early.nonce.clone().unwrap();
    late.nonce = Some(old.clone()); // same client IP: the same nonce is valid for both

    ts.advance(secs(599));
    let still_valid = response(&ts.exchange(&mut early, &Req::allocate()));
    ts.advance(secs(2));
    let stale = response(&ts.exchange(&mut late, &Req::allocate()));

    still_valid.assert_ok();
    stale.assert_error(438);
    assert_eq!(ts.server.stats().auth_failures.get("stale-nonce"), Some(&1));
    let fresh = stale.nonce().expect("a 438 carries a fresh NONCE");
    assert_ne!(fresh, old);
    assert!(fresh.starts_with("obMatJos2"));
    assert_eq!(stale.get(attr::REALM), Some(REALM.as_bytes().to_vec()));
    assert_eq!(
        stale.get(attr::PASSWORD_ALGORITHMS),
        Some(PASSWORD_ALGORITHMS_OFFER.to_vec())
    );
    assert_eq!(ts.server.allocation_count(), 1);

    late.nonce = Some(fresh);
    let retried = response(&ts.exchange(&mut late, &Req::allocate()));
    retried.assert_ok();
    assert_eq!(ts.server.allocation_count(), 2);
}

#[test]
fn forged_nonce_is_438() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    let mut other_ip = ts.client(40001);
    other_ip.five_tuple = five_tuple("127.0.0.2:40001");
    ts.fetch_nonce(&mut c, Method::ALLOCATE);
    ts.fetch_nonce(&mut other_ip, Method::ALLOCATE);
    let good = c.nonce.clone().unwrap();
    let mut bad_mac = good.clone();
    let last = bad_mac.pop().unwrap();
    bad_mac.push(if last == '0' { '1' } else { '0' });
    // Cookie (9) + features (4) + expiry (16 hex) + MAC (16 hex): push the expiry out.
    let later_expiry = format!("{}{}{}", &good[..13], "00000000ffffffff", &good[29..]);
    let forgeries = [
        bad_mac,
        later_expiry,
        other_ip.nonce.clone().unwrap(),
        "obMatJos2gAAA".to_owned(),
        "not-a-nonce-at-all".to_owned(),
    ];

    for forged in forgeries {
        c.nonce = Some(forged.clone());
        let r = response(&ts.exchange(&mut c, &Req::allocate()));
        r.assert_error(438);
        let fresh = r.nonce().unwrap();
        assert_ne!(fresh, forged);
        assert!(fresh.starts_with("obMatJos2"));
    }
    assert_eq!(ts.server.allocation_count(), 0);
    assert_eq!(ts.server.stats().auth_failures.get("bad-nonce"), Some(&5));

    c.nonce = Some(good);
    response(&ts.exchange(&mut c, &Req::allocate())).assert_ok();
}

#[test]
fn sha256_password_algorithm_is_answered_with_sha256_integrity() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    c.creds.sha256 = true;

    let r = ts.call(&mut c, &Req::allocate());

    r.assert_ok();
    let m = r.msg();
    assert!(m.has_integrity_sha256());
    let sha_key = long_term_key_sha256(&c.creds.username, REALM, &c.creds.password);
    let md5_key = long_term_key_md5(&c.creds.username, REALM, &c.creds.password);
    assert!(m.verify_integrity(&sha_key));
    assert!(!m.verify_integrity(&md5_key));
    assert_eq!(ts.server.allocation_count(), 1);
}

#[test]
fn password_algorithm_without_matching_password_algorithms_is_400() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    c.creds.sha256 = true;
    ts.fetch_nonce(&mut c, Method::ALLOCATE);
    // Missing, downgraded (MD5 only) and reordered offers.
    let offers: [Option<&[u8]>; 3] = [None, Some(&[0, 1, 0, 0]), Some(&[0, 1, 0, 0, 0, 2, 0, 0])];

    for offer in offers {
        let mut auth = c.auth();
        auth.algorithms = offer.map(<[u8]>::to_vec);
        let tid = ts.next_tid();
        let r = response(&ts.send(c.five_tuple, &Req::allocate().encode(tid, Some(&auth))));
        r.assert_error(400);
    }
    assert_eq!(ts.server.allocation_count(), 0);
}

/// RFC 8489 §9.2.4: unless the request has neither PASSWORD-ALGORITHMS nor PASSWORD-ALGORITHM,
/// both must be present; otherwise 400.
#[test]
fn password_algorithms_without_password_algorithm_is_400() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    ts.fetch_nonce(&mut c, Method::ALLOCATE);
    let mut auth = c.auth(); // MD5 key, MESSAGE-INTEGRITY
    auth.algorithms = Some(PASSWORD_ALGORITHMS_OFFER.to_vec());
    auth.algorithm = None;
    let tid = ts.next_tid();

    let r = response(&ts.send(c.five_tuple, &Req::allocate().encode(tid, Some(&auth))));

    r.assert_error(400);
    assert_eq!(ts.server.allocation_count(), 0);
}

#[test]
fn older_secret_is_accepted_until_rotated_out() {
    let mut ts = TestServer::build(
        config(),
        policy(),
        &format!("{SECRET}\n{OLD_SECRET}\n"),
        SEED,
    );
    let old = Secrets::parse(OLD_SECRET).unwrap();
    let username = format!("{}:alice", WALL_START + 3600);
    let mut a = ts.client_with("127.0.0.1:40001", &username, &old);
    let mut b = ts.client_with("127.0.0.1:40002", &username, &old);

    ts.allocate(&mut a);
    ts.server.replace_secrets(Secrets::parse(SECRET).unwrap());
    let refused = ts.call(&mut b, &Req::allocate());
    let refresh = ts.call(&mut a, &Req::refresh());

    refused.assert_error(401);
    refresh.assert_error(401);
    assert_eq!(ts.server.allocation_count(), 1);
    let mut current = ts.client(40003); // signed with the first (current) secret
    ts.allocate(&mut current);
    assert_eq!(ts.server.allocation_count(), 2);
}

/// A REST username with a control character, a byte above 0x7E, or 509 bytes and more is 400,
/// even with a correct HMAC: it would otherwise reach logs and evidence as written.
#[test]
fn username_outside_printable_ascii_or_too_long_is_400() {
    let mut ts = TestServer::new();
    let signer = Secrets::parse(SECRET).unwrap();
    let expiry = WALL_START + 3600;
    let long_user = "a".repeat(509 - format!("{expiry}:").len());
    let cases = [
        format!("{expiry}:bob\nforged log line"),
        format!("{expiry}:bob\u{1b}[31m"),
        format!("{expiry}:bob\0"),
        format!("{expiry}:bob\u{7f}"),
        format!("{expiry}:bøb"),
        format!("{expiry}:{long_user}"),
    ];
    for (i, username) in cases.iter().enumerate() {
        let port = 40001 + u16::try_from(i).unwrap();
        let mut c = ts.client_with(&format!("127.0.0.1:{port}"), username, &signer);

        let cmds = ts.exchange(&mut c, &Req::allocate());

        let r = response(&cmds);
        r.assert_error(400);
        assert!(bind_requests(&cmds).is_empty(), "{username:?}");
    }
    assert_eq!(ts.server.allocation_count(), 0);
    assert!(ts.take_events().is_empty());
    let failures = &ts.server.stats().auth_failures;
    assert_eq!(failures.get("malformed"), Some(&6), "{failures:?}");
}

/// Refused credentials are counted by reason; the challenge of a request without credentials
/// is counted apart, as `no-credentials` (the metrics show it, the log summaries skip it).
#[test]
fn refused_credentials_are_counted_by_reason() {
    let mut ts = TestServer::new();
    let mut c = ts.client(40001);
    c.creds.password = "not-the-password".to_owned();

    response(&ts.exchange(&mut c, &Req::allocate())).assert_error(401);
    response(&ts.exchange(&mut c, &Req::allocate())).assert_error(401);

    let failures = &ts.server.stats().auth_failures;
    assert_eq!(failures.get("bad-password"), Some(&2), "{failures:?}");
    assert!(
        failures
            .keys()
            .all(|r| ["bad-password", "no-credentials"].contains(r)),
        "{failures:?}"
    );
}

/// 508 bytes of printable ASCII (spaces included) is the longest username accepted.
#[test]
fn username_of_508_printable_bytes_is_accepted() {
    let mut ts = TestServer::new();
    let signer = Secrets::parse(SECRET).unwrap();
    let expiry = WALL_START + 3600;
    let prefix = format!("{expiry}:a b~");
    let username = format!("{prefix}{}", "z".repeat(508 - prefix.len()));
    assert_eq!(username.len(), 508);
    let mut c = ts.client_with("127.0.0.1:40001", &username, &signer);

    let r = ts.call(&mut c, &Req::allocate());

    r.assert_ok();
    assert_eq!(ts.server.allocation_count(), 1);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the user part (any characters, up to 600 bytes), an Allocate with a
        /// correctly signed REST username gets 400 exactly when the username is not printable
        /// ASCII of fewer than 509 bytes, and succeeds otherwise.
        #[test]
        fn strict_usernames_decide_between_400_and_success(
            user in prop_oneof![
                "[ -~]{0,520}",
                "[ -~]{0,40}[\u{0}-\u{1f}\u{7f}][ -~]{0,40}",
                "\\PC{0,200}",
            ],
        ) {
            let mut ts = TestServer::new();
            let signer = Secrets::parse(SECRET).unwrap();
            let username = format!("{}:{user}", WALL_START + 3600);
            let strict = username.len() < 509 && username.bytes().all(|b| (0x20..=0x7e).contains(&b));
            let mut c = ts.client_with("127.0.0.1:40001", &username, &signer);

            let r = ts.call(&mut c, &Req::allocate());

            if strict {
                prop_assert_eq!(r.class(), Class::Success, "{:?}: {:?}", username, r.error());
            } else {
                prop_assert_eq!(r.code(), Some(400), "{:?}", username);
                prop_assert_eq!(ts.server.allocation_count(), 0);
            }
        }
    }
}
