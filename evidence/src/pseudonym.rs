//! Pseudonyms for addresses and user ids, keyed per UTC day.
//!
//! In `pseudonym` mode an address becomes `p1:` and the first 16 bytes (32 hex digits) of
//! HMAC-SHA-256(day key, `"addr" 0x00` ‖ the 4 or 16 address bytes); IPv4-mapped IPv6
//! addresses are turned into IPv4 first. A user id becomes `u1:` and the same truncation of
//! HMAC-SHA-256(day key, `"user" 0x00` ‖ its UTF-8). The day key is 32 random bytes in
//! `keys/YYYY-MM-DD.key` (mode 0600), created on first use; retention deletes it with the
//! day's records, after which no pseudonym of that day can be linked to an address.
//!
//! `prefix` mode writes the /24 (IPv4) or /48 (IPv6) network in clear and pseudonymises user
//! ids; `full` writes addresses and user ids in clear.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::time::Timestamp;

/// How addresses appear in records (`evidence.addresses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressMode {
    /// Keyed per-day HMAC pseudonyms (the default).
    #[default]
    Pseudonym,
    /// The /24 or /48 network in clear; user ids pseudonymised.
    Prefix,
    /// Addresses and user ids in clear.
    Full,
}

/// Where new day keys come from. Production uses [`SystemKeySource`]; tests inject their own.
pub trait KeySource: Send {
    /// Returns 32 fresh secret bytes.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Key`] if no randomness is available.
    fn fresh_key(&mut self) -> Result<[u8; 32], Error>;
}

/// Day keys from the operating system's random source.
#[derive(Debug, Default)]
pub struct SystemKeySource;

impl KeySource for SystemKeySource {
    fn fresh_key(&mut self) -> Result<[u8; 32], Error> {
        let mut key = [0; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| Error::Key("the system random source failed".into()))?;
        Ok(key)
    }
}

/// Turns addresses and user ids into what records carry, per the [`AddressMode`].
pub struct Pseudonymizer {
    keys_dir: PathBuf,
    mode: AddressMode,
    source: Box<dyn KeySource>,
    /// Day → key; only the last few days stay loaded.
    cache: BTreeMap<String, hmac::Key>,
    /// The key of the day last used, by day number since the epoch: most records fall on the
    /// same day as the one before, and need neither the day's name nor a map lookup.
    today: Option<(u64, hmac::Key)>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field("keys_dir", &self.keys_dir)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Pseudonymizer {
    /// Keeps day keys in `keys_dir` (created if missing).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if the directory cannot be created.
    pub fn new(
        keys_dir: &Path,
        mode: AddressMode,
        source: Box<dyn KeySource>,
    ) -> Result<Self, Error> {
        fs::create_dir_all(keys_dir).map_err(|e| Error::io(keys_dir, e))?;
        Ok(Self {
            keys_dir: keys_dir.to_path_buf(),
            mode,
            source,
            cache: BTreeMap::new(),
            today: None,
        })
    }

    /// Returns the address mode.
    pub fn mode(&self) -> AddressMode {
        self.mode
    }

    /// Returns how an address seen at `at` appears in a record.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] or [`Error::Key`] if the day key cannot be created or read.
    pub fn address(&mut self, ip: IpAddr, at: SystemTime) -> Result<String, Error> {
        let ip = canonical(ip);
        match self.mode {
            AddressMode::Full => Ok(ip.to_string()),
            AddressMode::Prefix => Ok(match ip {
                IpAddr::V4(v4) => {
                    let o = v4.octets();
                    format!("{}.{}.{}.0/24", o[0], o[1], o[2])
                }
                IpAddr::V6(v6) => {
                    let mut o = v6.octets();
                    o[6..].fill(0);
                    format!("{}/48", std::net::Ipv6Addr::from(o))
                }
            }),
            AddressMode::Pseudonym => {
                let mut input = b"addr\0".to_vec();
                match ip {
                    IpAddr::V4(v4) => input.extend_from_slice(&v4.octets()),
                    IpAddr::V6(v6) => input.extend_from_slice(&v6.octets()),
                }
                self.tag("p1:", &input, at)
            }
        }
    }

    /// Returns how a REST user id seen at `at` appears in a record.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] or [`Error::Key`] if the day key cannot be created or read.
    pub fn user(&mut self, user: &str, at: SystemTime) -> Result<String, Error> {
        if self.mode == AddressMode::Full {
            return Ok(user.to_owned());
        }
        let mut input = b"user\0".to_vec();
        input.extend_from_slice(user.as_bytes());
        self.tag("u1:", &input, at)
    }

    /// Deletes the key files of days before `first_kept_day` (`YYYY-MM-DD`); returns those days.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if the directory cannot be listed or a file not deleted.
    pub fn destroy_keys_before(&mut self, first_kept_day: &str) -> Result<Vec<String>, Error> {
        let mut days = Vec::new();
        let entries = fs::read_dir(&self.keys_dir).map_err(|e| Error::io(&self.keys_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.keys_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(day) = name.strip_suffix(".key")
                && day.len() == 10
                && day < first_kept_day
            {
                days.push(day.to_owned());
            }
        }
        days.sort();
        for day in &days {
            let path = self.keys_dir.join(format!("{day}.key"));
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            self.cache.remove(day);
        }
        if !days.is_empty() {
            self.today = None;
        }
        if !days.is_empty() {
            crate::statement::sync_dir(&self.keys_dir.join("x"))?;
        }
        Ok(days)
    }

    fn tag(&mut self, prefix: &str, input: &[u8], at: SystemTime) -> Result<String, Error> {
        let ts = Timestamp::from_system_time(at);
        let day_number = ts.unix_millis() / MILLIS_PER_DAY;
        let key = match &self.today {
            Some((d, key)) if *d == day_number => key,
            _ => {
                let key = self.key(&ts.day())?.clone();
                &self.today.insert((day_number, key)).1
            }
        };
        let tag = hmac::sign(key, input);
        let mut out = String::with_capacity(prefix.len() + 2 * PSEUDONYM_BYTES);
        out.push_str(prefix);
        for b in &tag.as_ref()[..PSEUDONYM_BYTES] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Ok(out)
    }

    fn key(&mut self, day: &str) -> Result<&hmac::Key, Error> {
        if !self.cache.contains_key(day) {
            let raw = self.load_or_create(day)?;
            self.cache
                .insert(day.to_owned(), hmac::Key::new(hmac::HMAC_SHA256, &raw));
            while self.cache.len() > CACHED_DAYS {
                self.cache.pop_first();
            }
        }
        self.cache
            .get(day)
            .ok_or_else(|| Error::Key(format!("day key {day} vanished")))
    }

    fn load_or_create(&mut self, day: &str) -> Result<[u8; 32], Error> {
        let path = self.keys_dir.join(format!("{day}.key"));
        match fs::read(&path) {
            Ok(bytes) => bytes
                .try_into()
                .map_err(|_| Error::Corrupt(format!("{}: a day key has 32 bytes", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = self.source.fresh_key()?;
                let tmp = path.with_extension("tmp");
                let mut options = fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&tmp).map_err(|e| Error::io(&tmp, e))?;
                file.write_all(&key)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| Error::io(&tmp, e))?;
                fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
                crate::statement::sync_dir(&path)?;
                Ok(key)
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

/// Turns an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) into IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Pseudonyms keep 16 of the 32 HMAC bytes: collisions stay negligible, records stay short.
const PSEUDONYM_BYTES: usize = 16;
/// Day keys kept in memory (a day boundary needs two).
const CACHED_DAYS: usize = 3;
/// A UTC day: day keys change at midnight UTC.
const MILLIS_PER_DAY: u64 = 86_400_000;
const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// A key source whose keys are the day counter repeated: deterministic, never for production.
    pub(crate) struct CountingKeys(pub(crate) u8);

    impl KeySource for CountingKeys {
        fn fresh_key(&mut self) -> Result<[u8; 32], Error> {
            self.0 += 1;
            Ok([self.0; 32])
        }
    }

    fn at(day: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_515_200 + day * 86_400)
    }

    #[test]
    fn pseudonyms_are_stable_per_day_and_unlinkable_across_days() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Pseudonymizer::new(
            dir.path(),
            AddressMode::Pseudonym,
            Box::new(CountingKeys(0)),
        )
        .unwrap();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        let a = p.address(ip, at(0)).unwrap();
        assert!(a.starts_with("p1:") && a.len() == 3 + 32, "{a}");
        assert_eq!(p.address(mapped, at(0)).unwrap(), a);
        assert_ne!(p.address(ip, at(1)).unwrap(), a);
        // Back to the first day (events of two workers around midnight): its key again.
        assert_eq!(p.address(ip, at(0)).unwrap(), a);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[1; 32]);
        let expected = hmac::sign(&key, b"addr\0\xcb\x00\x71\x07");
        assert_eq!(a[3..], hex::encode(&expected.as_ref()[..16]));
        assert!(p.user("patient-42", at(0)).unwrap().starts_with("u1:"));
        assert!(dir.path().join("2026-12-06.key").exists());
        assert!(dir.path().join("2026-12-07.key").exists());

        // A fresh pseudonymizer reads the same key file.
        let mut again = Pseudonymizer::new(
            dir.path(),
            AddressMode::Pseudonym,
            Box::new(CountingKeys(9)),
        )
        .unwrap();
        assert_eq!(again.address(ip, at(0)).unwrap(), a);

        assert_eq!(
            again.destroy_keys_before("2026-12-07").unwrap(),
            vec!["2026-12-06"]
        );
        assert!(!dir.path().join("2026-12-06.key").exists());
        assert_ne!(again.address(ip, at(0)).unwrap(), a);
    }

    #[test]
    fn prefix_and_full_modes() {
        let dir = tempfile::tempdir().unwrap();
        let mut p =
            Pseudonymizer::new(dir.path(), AddressMode::Prefix, Box::new(CountingKeys(0))).unwrap();
        assert_eq!(
            p.address("203.0.113.7".parse().unwrap(), at(0)).unwrap(),
            "203.0.113.0/24"
        );
        assert_eq!(
            p.address("2001:db8:1234:5678::1".parse().unwrap(), at(0))
                .unwrap(),
            "2001:db8:1234::/48"
        );
        assert!(p.user("patient-42", at(0)).unwrap().starts_with("u1:"));
        let mut f =
            Pseudonymizer::new(dir.path(), AddressMode::Full, Box::new(CountingKeys(0))).unwrap();
        assert_eq!(
            f.address("::ffff:192.0.2.1".parse().unwrap(), at(0))
                .unwrap(),
            "192.0.2.1"
        );
        assert_eq!(f.user("patient-42", at(0)).unwrap(), "patient-42");
    }
}
