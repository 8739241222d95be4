//! TURN REST API credentials (coturn-compatible): issue and verify in one place.
//!
//! A username is `"<unix-expiry>:<user-id>"` (or a bare `"<unix-expiry>"`), and its password is
//! `base64(HMAC-SHA1(secret, username))`. Several secrets are accepted at once so that the
//! signing secret can be rotated without breaking calls: the first signs, all verify.
//! Wall-clock time is always passed in; nothing here reads a clock or a file.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

/// The most bytes a USERNAME may have: RFC 8489 §14.3 says fewer than 509.
pub const MAX_USERNAME_LEN: usize = 508;

/// Errors of parsing secrets and verifying usernames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The secret file holds no secret.
    #[error("the secret file holds no secret (one secret per line; '#' starts a comment)")]
    NoSecrets,
    /// A secret is shorter than the minimum.
    #[error("secret on line {line} is shorter than {MIN_SECRET_LEN} bytes")]
    WeakSecret {
        /// 1-based line number in the secret file.
        line: usize,
    },
    /// The username is not `<expiry>[:<user>]`.
    #[error("username is not in the TURN REST form \"<unix-expiry>:<user-id>\"")]
    Malformed,
    /// The username's expiry has passed.
    #[error("credential expired")]
    Expired,
    /// The username's expiry is further in the future than the configured maximum lifetime.
    #[error("credential lifetime exceeds the configured maximum")]
    TooLong,
    /// A requested TTL is zero or above the maximum.
    #[error("ttl must be between 1 s and {max} s")]
    BadTtl {
        /// The maximum in seconds.
        max: u64,
    },
    /// A user id contains characters that cannot appear in a username.
    #[error("user id must be 1 to 256 printable ASCII characters without ':'")]
    BadUserId,
}

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// One shared secret. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The accepted secrets: the first signs new credentials, all verify.
#[derive(Debug, Clone)]
pub struct Secrets {
    secrets: Vec<Secret>,
}

/// A parsed REST username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestUsername<'a> {
    /// Expiry as Unix seconds.
    pub expiry: u64,
    /// The user id after the separator; empty for a bare timestamp.
    pub user: &'a str,
}

/// A credential ready to hand to a client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Credential {
    /// `"<expiry>:<user>"`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
    /// Seconds until expiry.
    pub ttl: u64,
}

impl Secrets {
    /// Parses the contents of a secret file: one secret per line, blank lines and lines
    /// starting with `#` ignored, surrounding whitespace trimmed.
    ///
    /// # Errors
    ///
    /// Returns [`Error::NoSecrets`] for a file without secrets and [`Error::WeakSecret`] for a
    /// secret shorter than [`MIN_SECRET_LEN`].
    pub fn parse(contents: &str) -> Result<Self, Error> {
        let mut secrets = Vec::new();
        for (i, line) in contents.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() < MIN_SECRET_LEN {
                return Err(Error::WeakSecret { line: i + 1 });
            }
            secrets.push(Secret(line.as_bytes().to_vec()));
        }
        if secrets.is_empty() {
            return Err(Error::NoSecrets);
        }
        Ok(Self { secrets })
    }

    /// Returns how many secrets are accepted.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Returns false: a `Secrets` always holds at least one secret.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Issues a credential for `user` valid for `ttl` from `now`, signed by the first secret.
    ///
    /// # Errors
    ///
    /// Returns [`Error::BadTtl`] when `ttl` is zero or above `max_ttl`, and
    /// [`Error::BadUserId`] for an unusable user id.
    pub fn issue(
        &self,
        user: &str,
        ttl: Duration,
        max_ttl: Duration,
        now: SystemTime,
    ) -> Result<Credential, Error> {
        if ttl.is_zero() || ttl > max_ttl {
            return Err(Error::BadTtl {
                max: max_ttl.as_secs(),
            });
        }
        if !valid_user_id(user) {
            return Err(Error::BadUserId);
        }
        let expiry = unix_secs(now) + ttl.as_secs();
        let username = format!("{expiry}:{user}");
        let password = password(&self.secrets[0], &username);
        Ok(Credential {
            username,
            password,
            ttl: ttl.as_secs(),
        })
    }

    /// Returns the password each accepted secret gives `username`, signing secret first.
    pub fn passwords<'a>(&'a self, username: &'a str) -> impl Iterator<Item = String> + 'a {
        self.secrets.iter().map(move |s| password(s, username))
    }
}

/// Parses a REST username and checks its expiry against `now` and `max_ttl` (plus
/// `skew` of tolerated clock difference with the issuer).
///
/// # Errors
///
/// Returns [`Error::Malformed`], [`Error::Expired`] or [`Error::TooLong`].
pub fn check_username(
    username: &str,
    now: SystemTime,
    max_ttl: Duration,
    skew: Duration,
) -> Result<RestUsername<'_>, Error> {
    let parsed = parse_username(username)?;
    let now = unix_secs(now);
    if parsed.expiry <= now {
        return Err(Error::Expired);
    }
    if parsed.expiry - now > max_ttl.as_secs() + skew.as_secs() {
        return Err(Error::TooLong);
    }
    Ok(parsed)
}

/// Returns true when `username` may be a REST username at all: printable ASCII only (space to
/// `~`: no control character, no byte above 0x7E) and at most [`MAX_USERNAME_LEN`] bytes. The
/// relay answers any other USERNAME with 400, so nothing it writes to a log or to evidence
/// can carry a line break, an escape sequence or a NUL from a username.
pub fn is_strict_username(username: &str) -> bool {
    username.len() <= MAX_USERNAME_LEN && username.bytes().all(|b| (0x20..=0x7E).contains(&b))
}

/// Parses `"<unix-expiry>"` or `"<unix-expiry>:<user-id>"`.
///
/// # Errors
///
/// Returns [`Error::Malformed`] when the expiry is not a decimal number, or the username
/// fails [`is_strict_username`].
pub fn parse_username(username: &str) -> Result<RestUsername<'_>, Error> {
    if !is_strict_username(username) {
        return Err(Error::Malformed);
    }
    let (ts, user) = username.split_once(':').unwrap_or((username, ""));
    if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Malformed);
    }
    let expiry = ts.parse().map_err(|_| Error::Malformed)?;
    Ok(RestUsername { expiry, user })
}

/// The contents of a secret file after a rotation: `new` becomes the signing secret (the first
/// secret line), every secret already there stays accepted. Comment lines before the first
/// secret stay at the top.
///
/// # Errors
///
/// Returns [`Error::WeakSecret`] (line 1) when `new` is too short, or any error of
/// [`Secrets::parse`] on the result.
pub fn rotate_secret_file(contents: &str, new: &str) -> Result<String, Error> {
    if new.trim().len() < MIN_SECRET_LEN || new.contains(['\n', '\r', '#']) {
        return Err(Error::WeakSecret { line: 1 });
    }
    let lines: Vec<&str> = contents.lines().collect();
    let first_secret = lines
        .iter()
        .position(|l| is_secret_line(l))
        .unwrap_or(lines.len());
    let mut out = String::new();
    for l in &lines[..first_secret] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(new.trim());
    out.push('\n');
    for l in &lines[first_secret..] {
        out.push_str(l);
        out.push('\n');
    }
    Secrets::parse(&out)?;
    Ok(out)
}

/// The contents of a secret file with only the first `keep` secrets left (the signing secret
/// first), and how many were removed. Comment and blank lines stay.
///
/// # Errors
///
/// Returns [`Error::NoSecrets`] when `keep` is 0, or any error of [`Secrets::parse`] on the
/// input.
pub fn retire_secrets(contents: &str, keep: usize) -> Result<(String, usize), Error> {
    Secrets::parse(contents)?;
    if keep == 0 {
        return Err(Error::NoSecrets);
    }
    let mut seen = 0;
    let mut removed = 0;
    let mut out = String::new();
    for l in contents.lines() {
        if is_secret_line(l) {
            seen += 1;
            if seen > keep {
                removed += 1;
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    Ok((out, removed))
}

fn is_secret_line(l: &str) -> bool {
    let l = l.trim();
    !l.is_empty() && !l.starts_with('#')
}

/// Returns true for a user id that can be embedded in a username.
pub fn valid_user_id(user: &str) -> bool {
    !user.is_empty() && user.len() <= 256 && user.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

fn password(secret: &Secret, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &secret.0);
    BASE64.encode(hmac::sign(&key, username.as_bytes()).as_ref())
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86400);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn password_matches_coturn_scheme() {
        // base64(HMAC-SHA1("north-of-the-wall-secret", "1700003600:alice")), computed with
        // `printf %s 1700003600:alice | openssl dgst -sha1 -hmac north-of-the-wall-secret -binary | base64`.
        let s = Secrets::parse("north-of-the-wall-secret\n").unwrap();
        let c = s.issue("alice", HOUR, DAY, at(1_700_000_000)).unwrap();
        assert_eq!(c.username, "1700003600:alice");
        assert_eq!(c.password, "+pbdeVZeLq6V0tu55lmZt5wmwyc=");
        assert_eq!(c.ttl, 3600);
    }

    #[test]
    fn secret_file_parsing() {
        assert_eq!(
            Secrets::parse("# only a comment\n\n").unwrap_err(),
            Error::NoSecrets
        );
        assert_eq!(
            Secrets::parse("short").unwrap_err(),
            Error::WeakSecret { line: 1 }
        );
        let s = Secrets::parse("# new\nnew-secret-0123456789\nold-secret-0123456789\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.passwords("1:a").count(), 2);
        assert!(!format!("{s:?}").contains("new-secret"));
    }

    #[test]
    fn usernames_are_checked() {
        let now = at(1000);
        assert_eq!(
            check_username("2000:bob", now, HOUR, Duration::ZERO),
            Ok(RestUsername {
                expiry: 2000,
                user: "bob"
            })
        );
        assert_eq!(
            check_username("2000", now, HOUR, Duration::ZERO)
                .unwrap()
                .user,
            ""
        );
        assert_eq!(
            check_username("999:bob", now, HOUR, Duration::ZERO),
            Err(Error::Expired)
        );
        assert_eq!(
            check_username("1000:bob", now, HOUR, Duration::ZERO),
            Err(Error::Expired)
        );
        assert_eq!(
            check_username("99999:bob", now, HOUR, Duration::ZERO),
            Err(Error::TooLong)
        );
        assert_eq!(
            check_username("bob:2000", now, HOUR, Duration::ZERO),
            Err(Error::Malformed)
        );
        assert_eq!(
            check_username(":bob", now, HOUR, Duration::ZERO),
            Err(Error::Malformed)
        );
        assert_eq!(
            check_username("99999999999999999999999:b", now, HOUR, Duration::ZERO),
            Err(Error::Malformed)
        );
        for bad in ["2000:b\nob", "2000:b\u{1b}", "2000:\u{0}", "2000:bøb"] {
            assert_eq!(
                check_username(bad, now, HOUR, Duration::ZERO),
                Err(Error::Malformed),
                "{bad:?}"
            );
        }
        let longest = format!("2000:{}", "x".repeat(MAX_USERNAME_LEN - 5));
        assert!(check_username(&longest, now, HOUR, Duration::ZERO).is_ok());
        let too_long = format!("{longest}x");
        assert_eq!(
            check_username(&too_long, now, HOUR, Duration::ZERO),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn rotation_puts_the_new_secret_first_and_keeps_the_old() {
        let file = "# eeaturn secrets\nold-secret-0123456789\n";
        let rotated = rotate_secret_file(file, "new-secret-0123456789").unwrap();
        assert_eq!(
            rotated,
            "# eeaturn secrets\nnew-secret-0123456789\nold-secret-0123456789\n"
        );
        let after = Secrets::parse(&rotated).unwrap();
        let before = Secrets::parse(file).unwrap();
        let c_old = before.issue("a", HOUR, DAY, at(0)).unwrap();
        let c_new = after.issue("a", HOUR, DAY, at(0)).unwrap();
        assert_ne!(c_old.password, c_new.password);
        // Both verify after the rotation: the old one by the second secret.
        assert!(
            after
                .passwords(&c_old.username)
                .any(|p| p == c_old.password)
        );
        assert_eq!(
            after.passwords(&c_new.username).next().unwrap(),
            c_new.password
        );
        assert_eq!(
            rotate_secret_file(file, "short"),
            Err(Error::WeakSecret { line: 1 })
        );
        assert!(rotate_secret_file(file, "two\nlines-0123456789").is_err());

        let (retired, removed) = retire_secrets(&rotated, 1).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(retired, "# eeaturn secrets\nnew-secret-0123456789\n");
        let only_new = Secrets::parse(&retired).unwrap();
        assert!(
            !only_new
                .passwords(&c_old.username)
                .any(|p| p == c_old.password)
        );
        assert_eq!(retire_secrets(&retired, 1).unwrap().1, 0);
        assert_eq!(retire_secrets(&retired, 0), Err(Error::NoSecrets));
    }

    #[test]
    fn issue_bounds_ttl_and_user() {
        let s = Secrets::parse("0123456789abcdef").unwrap();
        assert!(s.issue("a", Duration::ZERO, DAY, at(0)).is_err());
        assert!(s.issue("a", DAY * 2, DAY, at(0)).is_err());
        assert_eq!(s.issue("a:b", HOUR, DAY, at(0)), Err(Error::BadUserId));
        assert_eq!(s.issue("", HOUR, DAY, at(0)), Err(Error::BadUserId));
    }
}
