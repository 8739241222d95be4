//! The long-term credential mechanism (RFC 8489 §9.2) over TURN REST credentials: stateless
//! nonces, password algorithms, and which integrity attribute a response carries.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

use crate::credentials::{self, Secrets};
use crate::stun::attr;
use crate::stun::integrity::{long_term_key_md5, long_term_key_sha256};
use crate::stun::{ErrorCode, Message, MessageBuilder};

/// The nonce cookie announcing security features. See RFC 8489 §9.2.
const NONCE_COOKIE: &str = "obMatJos2";
/// Security feature set, base64: only "password algorithms" (bit 0). See RFC 8489 §18.1.
const FEATURES: &str = "gAAA";
/// The PASSWORD-ALGORITHMS value the server offers: SHA-256 first, then MD5, no parameters.
pub(crate) const PASSWORD_ALGORITHMS_VALUE: [u8; 8] =
    [0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
/// Tolerated difference between the issuer's clock and ours for credential lifetimes.
const CREDENTIAL_SKEW: Duration = Duration::from_secs(300);

/// Which integrity attribute (and key) a response to an authenticated request carries.
#[derive(Debug, Clone)]
pub(crate) enum ResponseIntegrity {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

impl ResponseIntegrity {
    pub(crate) fn apply(&self, b: &mut MessageBuilder) {
        match self {
            Self::Sha1(key) => b.add_message_integrity(key),
            Self::Sha256(key) => b.add_message_integrity_sha256(key),
        }
    }
}

/// The outcome of authenticating a request.
#[derive(Debug)]
pub(crate) enum AuthOutcome {
    Ok {
        username: String,
        user_key: String,
        integrity: ResponseIntegrity,
    },
    /// Answer with this error code: 401 and 438 as a challenge (see [`Self::challenges`]),
    /// 400 with the detail.
    Reject {
        code: ErrorCode,
        detail: Option<&'static str>,
        /// Why, as a stable name for the `reason` label (see [`Stats::auth_failures`]).
        ///
        /// [`Stats::auth_failures`]: super::Stats::auth_failures
        reason: &'static str,
    },
}

impl AuthOutcome {
    /// Returns true when a rejection with `code` carries a challenge: REALM, a fresh NONCE and
    /// PASSWORD-ALGORITHMS. See RFC 8489 §9.2.4.
    pub(crate) fn challenges(code: ErrorCode) -> bool {
        code == ErrorCode::UNAUTHORIZED || code == ErrorCode::STALE_NONCE
    }
}

/// Nonce and credential settings.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    pub(crate) realm: String,
    pub(crate) secrets: Secrets,
    pub(crate) nonce_key: hmac::Key,
    pub(crate) nonce_lifetime: Duration,
    pub(crate) max_credential_ttl: Duration,
}

impl Authenticator {
    /// Returns a nonce valid for `nonce_lifetime` from `now`, bound to the client's IP.
    pub(crate) fn nonce(&self, client: IpAddr, now: SystemTime) -> String {
        let expiry = unix_secs(now) + self.nonce_lifetime.as_secs();
        let mac = self.nonce_mac(expiry, client);
        format!("{NONCE_COOKIE}{FEATURES}{expiry:016x}{mac:016x}")
    }

    /// Returns `Ok(true)` for a valid nonce, `Ok(false)` for an expired one, `Err` for a
    /// forged or foreign one.
    fn check_nonce(&self, nonce: &str, client: IpAddr, now: SystemTime) -> Result<bool, ()> {
        let rest = nonce
            .strip_prefix(NONCE_COOKIE)
            .and_then(|r| r.strip_prefix(FEATURES))
            .ok_or(())?;
        if rest.len() != 32 {
            return Err(());
        }
        let expiry = u64::from_str_radix(&rest[..16], 16).map_err(|_| ())?;
        let mac = u64::from_str_radix(&rest[16..], 16).map_err(|_| ())?;
        if mac != self.nonce_mac(expiry, client) {
            return Err(());
        }
        Ok(expiry > unix_secs(now))
    }

    fn nonce_mac(&self, expiry: u64, client: IpAddr) -> u64 {
        let mut c = hmac::Context::with_key(&self.nonce_key);
        c.update(&expiry.to_be_bytes());
        match client {
            IpAddr::V4(v4) => c.update(&v4.octets()),
            IpAddr::V6(v6) => c.update(&v6.octets()),
        }
        let tag = c.sign();
        let mut b = [0u8; 8];
        b.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_be_bytes(b)
    }

    /// Authenticates a request. See RFC 8489 §9.2.4.
    pub(crate) fn authenticate(
        &self,
        msg: &Message<'_>,
        client: IpAddr,
        now: SystemTime,
    ) -> AuthOutcome {
        if !msg.has_integrity() {
            return reject(ErrorCode::UNAUTHORIZED, None, AUTH_NO_CREDENTIALS);
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            return reject(
                ErrorCode::BAD_REQUEST,
                Some("USERNAME, REALM and NONCE are required"),
                AUTH_MALFORMED,
            );
        };
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            attr::decode_text(attr::USERNAME, username, credentials::MAX_USERNAME_LEN),
            attr::decode_text(attr::REALM, realm, 763),
            attr::decode_text(attr::NONCE, nonce, 763),
        ) else {
            return reject(
                ErrorCode::BAD_REQUEST,
                Some("malformed USERNAME, REALM or NONCE"),
                AUTH_MALFORMED,
            );
        };
        if !credentials::is_strict_username(username) {
            return reject(
                ErrorCode::BAD_REQUEST,
                Some("USERNAME must be printable ASCII and fewer than 509 bytes"),
                AUTH_MALFORMED,
            );
        }
        match self.check_nonce(nonce, client, now) {
            Ok(true) => {}
            Ok(false) => return reject(ErrorCode::STALE_NONCE, None, AUTH_STALE_NONCE),
            Err(()) => return reject(ErrorCode::STALE_NONCE, None, AUTH_BAD_NONCE),
        }
        if realm != self.realm {
            return reject(ErrorCode::UNAUTHORIZED, None, AUTH_WRONG_REALM);
        }
        // PASSWORD-ALGORITHM selects the key; a request that names one must echo the offer
        // unchanged (downgrade protection). See RFC 8489 §9.2.4.
        let algorithm = match msg.get(attr::PASSWORD_ALGORITHM) {
            None if msg.get(attr::PASSWORD_ALGORITHMS).is_some() => {
                return reject(
                    ErrorCode::BAD_REQUEST,
                    Some("PASSWORD-ALGORITHMS without PASSWORD-ALGORITHM"),
                    AUTH_MALFORMED,
                );
            }
            None => attr::PASSWORD_ALGORITHM_MD5,
            Some(v) => {
                let Ok(alg) = attr::decode_password_algorithm(v) else {
                    return reject(
                        ErrorCode::BAD_REQUEST,
                        Some("malformed PASSWORD-ALGORITHM"),
                        AUTH_MALFORMED,
                    );
                };
                if msg.get(attr::PASSWORD_ALGORITHMS) != Some(&PASSWORD_ALGORITHMS_VALUE[..]) {
                    return reject(
                        ErrorCode::BAD_REQUEST,
                        Some("PASSWORD-ALGORITHMS does not match"),
                        AUTH_MALFORMED,
                    );
                }
                if alg != attr::PASSWORD_ALGORITHM_MD5 && alg != attr::PASSWORD_ALGORITHM_SHA256 {
                    return reject(
                        ErrorCode::BAD_REQUEST,
                        Some("unsupported PASSWORD-ALGORITHM"),
                        AUTH_MALFORMED,
                    );
                }
                alg
            }
        };
        let user = match credentials::check_username(
            username,
            now,
            self.max_credential_ttl,
            CREDENTIAL_SKEW,
        ) {
            Ok(user) => user,
            Err(credentials::Error::Expired) => {
                return reject(ErrorCode::UNAUTHORIZED, None, AUTH_EXPIRED);
            }
            Err(_) => return reject(ErrorCode::UNAUTHORIZED, None, AUTH_BAD_USERNAME),
        };
        let user_key = if user.user.is_empty() {
            username.to_owned()
        } else {
            user.user.to_owned()
        };
        for password in self.secrets.passwords(username) {
            let key: Vec<u8> = if algorithm == attr::PASSWORD_ALGORITHM_SHA256 {
                long_term_key_sha256(username, &self.realm, &password).to_vec()
            } else {
                long_term_key_md5(username, &self.realm, &password).to_vec()
            };
            if msg.verify_integrity(&key) {
                let integrity = if msg.has_integrity_sha256() {
                    ResponseIntegrity::Sha256(key)
                } else {
                    ResponseIntegrity::Sha1(key)
                };
                return AuthOutcome::Ok {
                    username: username.to_owned(),
                    user_key,
                    integrity,
                };
            }
        }
        reject(ErrorCode::UNAUTHORIZED, None, AUTH_BAD_PASSWORD)
    }
}

fn reject(code: ErrorCode, detail: Option<&'static str>, reason: &'static str) -> AuthOutcome {
    AuthOutcome::Reject {
        code,
        detail,
        reason,
    }
}

/// The `reason`s of [`Stats::auth_failures`](super::Stats::auth_failures), every one of them.
pub const AUTH_FAILURE_REASONS: [&str; 8] = [
    AUTH_NO_CREDENTIALS,
    AUTH_MALFORMED,
    AUTH_STALE_NONCE,
    AUTH_BAD_NONCE,
    AUTH_WRONG_REALM,
    AUTH_EXPIRED,
    AUTH_BAD_USERNAME,
    AUTH_BAD_PASSWORD,
];
/// No MESSAGE-INTEGRITY: the first request of every client, answered with the challenge.
pub const AUTH_NO_CREDENTIALS: &str = "no-credentials";
/// USERNAME, REALM, NONCE or the password algorithm attributes missing or malformed (400).
const AUTH_MALFORMED: &str = "malformed";
/// A nonce of ours that expired (438, the client retries with the fresh one).
const AUTH_STALE_NONCE: &str = "stale-nonce";
/// A nonce we did not issue, or issued to another address (438).
const AUTH_BAD_NONCE: &str = "bad-nonce";
/// Another realm than ours.
const AUTH_WRONG_REALM: &str = "wrong-realm";
/// A REST username whose expiry has passed.
const AUTH_EXPIRED: &str = "expired";
/// A REST username that does not parse, or lives longer than `auth.max_credential_ttl`.
const AUTH_BAD_USERNAME: &str = "bad-username";
/// MESSAGE-INTEGRITY does not match any accepted secret: a wrong password.
const AUTH_BAD_PASSWORD: &str = "bad-password";

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
