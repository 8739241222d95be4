//! Cost of authenticating one request with a TURN REST credential, the way the relay does it:
//! check the username's expiry, compute the password from each accepted secret
//! (HMAC-SHA1), derive the long-term key (MD5 of "user:realm:password") and verify the
//! MESSAGE-INTEGRITY of a real Allocate request. Also the API's side: issuing one credential.
//!
//! ```sh
//! cargo bench --bench credential_check
//! ```
//!
//! Prints ns per operation, best of 5 rounds of 100,000.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use eeaturn::credentials::{Secrets, check_username};
use eeaturn::stun::integrity::long_term_key_md5;
use eeaturn::stun::{Class, Message, MessageBuilder, MessageType, Method, TransactionId, attr};

const ROUNDS: usize = 5;
const N: u32 = 100_000;

fn best(f: impl Fn(u32)) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for i in 0..N {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / f64::from(N)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    for (label, file) in [
        ("1 secret", "current-secret-0123456789abcdef\n"),
        (
            "2 secrets, signed by the second (mid-rotation)",
            "new-secret-0123456789abcdef\ncurrent-secret-0123456789abcdef\n",
        ),
    ] {
        let secrets = Secrets::parse(file).unwrap();
        let signer = Secrets::parse("current-secret-0123456789abcdef\n").unwrap();
        let cred = signer
            .issue("dev/u-1234", Duration::from_secs(3600), day, now)
            .unwrap();
        // A signed Allocate request, as a client sends it.
        let mut b = MessageBuilder::new(
            MessageType::new(Method::ALLOCATE, Class::Request),
            TransactionId([7; 12]),
        );
        b.add_raw(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        b.add_raw(attr::USERNAME, cred.username.as_bytes());
        b.add_raw(attr::REALM, b"eeaturn.dev");
        b.add_raw(attr::NONCE, b"obMatJos2gAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let key = long_term_key_md5(&cred.username, "eeaturn.dev", &cred.password);
        b.add_message_integrity(&key);
        b.add_fingerprint();
        let bytes = b.finish();

        let ns = best(|_| {
            let user = check_username(black_box(&cred.username), now, day, Duration::ZERO).unwrap();
            black_box(user);
            let ok = secrets.passwords(&cred.username).any(|password| {
                let key = long_term_key_md5(&cred.username, "eeaturn.dev", &password);
                Message::parse(black_box(&bytes)).is_ok_and(|m| m.verify_integrity(&key))
            });
            assert!(ok);
        });
        println!("verify a REST credential on an Allocate, {label}: {ns:.0} ns");
    }
    let secrets = Secrets::parse("current-secret-0123456789abcdef\n").unwrap();
    let ns = best(|i| {
        let c = secrets
            .issue(
                black_box("dev/u-1234"),
                Duration::from_secs(u64::from(i % 3600 + 1)),
                day,
                now,
            )
            .unwrap();
        black_box(c);
    });
    println!("issue one credential (API, CLI): {ns:.0} ns");
}
