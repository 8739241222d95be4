//! The fuzz targets as ordinary tests: every binary-input function of `eeaturn_core::fuzzing`
//! runs over every file in `tests/vectors/`, the committed minimised libFuzzer corpus in
//! `fuzz/corpus/<target>/`, and a deterministic set of mutations of the vectors (bit flips,
//! truncations, length-field edits, the same with FINGERPRINT recomputed, and seeded random
//! edits). The text-input targets (REST usernames, the TOML config, the API body) run over
//! their corpus, a few seeds and mutations of those. The stable toolchain cannot run
//! `cargo fuzz`; this keeps every target exercised in CI.

#[path = "common/vectors.rs"]
mod vectors;

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use eeaturn::stun::integrity::fingerprint;
use eeaturn::stun::{ChannelData, HEADER_LEN, Message};
use eeaturn_core::fuzzing;

#[test]
fn vectors_are_valid_stun_or_channel_data() {
    let vectors = vectors::all();
    assert!(
        vectors.len() >= 5,
        "tests/vectors/ holds the RFC 5769 samples and seeds"
    );
    for (name, bytes) in &vectors {
        let stun = Message::parse(bytes).is_ok();
        let channel = ChannelData::parse(bytes).is_ok();
        assert!(stun || channel, "{name} parses");
    }
}

#[test]
fn stun_parse_over_vectors_and_mutations() {
    run("stun_parse", fuzzing::stun_parse);
}

#[test]
fn channel_data_over_vectors_and_mutations() {
    run("channel_data", fuzzing::channel_data);
}

#[test]
fn server_input_over_vectors_and_mutations() {
    run("server_input", fuzzing::server_input);
}

#[test]
fn stream_framing_over_vectors_and_mutations() {
    run("stream_framing", fuzzing::stream_framing);
}

#[test]
fn rest_username_over_corpus_and_seeds() {
    let seeds = [
        "1700003600",
        "1700003600:alice",
        "1700003600:",
        ":alice",
        "soon:alice",
        "-1:alice",
        "99999999999999999999999:x",
        "1700003600:a:b",
        "1700003600:u\u{1b}[31m\n",
        "1700090000:key/user-1",
    ];
    run_on(
        "rest_username",
        fuzzing::rest_username,
        text_inputs("rest_username", &seeds),
    );
}

#[test]
fn config_parse_over_corpus_and_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<String> = ["config/dev.toml", "config/eeaturn.example.toml"]
        .iter()
        .map(|f| std::fs::read_to_string(root.join(f)).expect("a shipped config"))
        .collect();
    let mut seeds: Vec<&str> = files.iter().map(String::as_str).collect();
    seeds.extend([
        "[server]\nrealm = \"r\"\nlisten = [\"udp://127.0.0.1:3478\"]\n[auth]\nsecret_file = \"s\"\n[relay]\naddresses = [\"127.0.0.1\"]\n[geo]\ncountry_db = \"c.mmdb\"\n",
        "[limits]\nunauthenticated_rate = 4294967296\n",
        "[limits]\nmax_lifetime = \"99999999999999999999s\"\n",
        "[server]\nlisten = [\"tls://[::1]:99999\"]\n",
    ]);
    run_on(
        "config_parse",
        eeaturn::fuzzing::config_parse,
        text_inputs("config_parse", &seeds),
    );
}

#[test]
fn api_body_over_corpus_and_seeds() {
    let seeds = [
        "{}",
        r#"{"user":"u-1","ttl":60}"#,
        r#"{"user":null}"#,
        "[]",
        r#"{"ttl":-1}"#,
        r#"{"ttl":1.5e300}"#,
        r#"{"user":"a","user":"b"}"#,
        r#"{"user":"a","x":1}"#,
        r#"{"user":"\u0000\n"}"#,
        "nul\u{0}",
    ];
    run_on(
        "api_body",
        eeaturn::fuzzing::api_body,
        text_inputs("api_body", &seeds),
    );
}

#[test]
fn mutations_are_deterministic_and_bounded() {
    let a = inputs("stun_parse");
    let b = inputs("stun_parse");
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x == y));
    assert!(
        (2_000..=40_000).contains(&a.len()),
        "{} inputs: a few thousand per vector set",
        a.len()
    );
}

/// Runs `target` over every input and fails with a summary of the inputs that panicked.
fn run(target: &str, f: fn(&[u8])) {
    run_on(target, f, inputs(target));
}

/// Runs `f` over `inputs` and fails with a summary of the inputs that panicked.
fn run_on(target: &str, f: fn(&[u8]), inputs: Vec<(String, Vec<u8>)>) {
    install_quiet_hook();
    let mut failures: Vec<(String, Vec<u8>, String)> = Vec::new();
    for (name, bytes) in &inputs {
        QUIET.set(true);
        let result = panic::catch_unwind(AssertUnwindSafe(|| f(bytes)));
        QUIET.set(false);
        if result.is_err() {
            let message = LAST_PANIC.take().unwrap_or_default();
            failures.push((name.clone(), bytes.clone(), message));
        }
    }
    if failures.is_empty() {
        return;
    }
    // Group by where it panicked, so that one bug reads as one entry.
    let mut kinds: Vec<(String, usize, &str, &[u8], &str)> = Vec::new();
    for (name, bytes, message) in &failures {
        let place = message.split(": ").next().unwrap_or("").to_owned();
        match kinds.iter_mut().find(|k| k.0 == place) {
            Some(k) => k.1 += 1,
            None => kinds.push((place, 1, name, bytes, message)),
        }
    }
    let mut report = format!(
        "{target}: {} of {} inputs panicked\n",
        failures.len(),
        inputs.len()
    );
    for (place, count, name, bytes, message) in kinds {
        let message: String = message.chars().take(600).collect();
        report.push_str(&format!(
            "\n{count} × {place}\n  first: {name}\n  input: {}\n  {message}\n",
            hex::encode(bytes)
        ));
    }
    panic!("{report}");
}

/// Every input for `target`: the vectors, the committed corpus, and the mutations of the
/// vectors.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let vectors = vectors::all();
    let mut out = vectors.clone();
    out.extend(corpus(target));
    for (name, bytes) in &vectors {
        mutate(name, bytes, &mut out);
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for i in 0..HAVOC_PER_SET {
        let (_, a) = &vectors[rng.below(vectors.len())];
        let (_, b) = &vectors[rng.below(vectors.len())];
        out.push((format!("havoc {i}"), havoc(a, b, &mut rng)));
    }
    out
}

/// The committed minimised corpus of `target` (`fuzz/corpus/<target>/`), in name order.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| Some((p.display().to_string(), std::fs::read(&p).ok()?)))
        .collect()
}

/// The inputs of a text target: `seeds`, each cut at every 7th byte and with every 5th byte
/// of its first 256 flipped, seeded random edits of them, and the corpus as it is (already
/// what the fuzzer found; mutating it too would make this test slow for little).
fn text_inputs(target: &str, seeds: &[&str]) -> Vec<(String, Vec<u8>)> {
    let base: Vec<(String, Vec<u8>)> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("seed {i}"), s.as_bytes().to_vec()))
        .collect();
    let mut out = base.clone();
    out.extend(corpus(target));
    for (name, v) in &base {
        for len in (0..v.len()).step_by(7) {
            out.push((format!("{name} cut at {len}"), v[..len].to_vec()));
        }
        for at in (0..v.len().min(256)).step_by(5) {
            for flip in [0x01, 0x20, 0x80] {
                let mut m = v.clone();
                m[at] ^= flip;
                out.push((format!("{name} byte {at} ^ {flip:#x}"), m));
            }
        }
    }
    let mut rng = XorShift(0xC0FF_EE00_D15E_A5E5);
    for i in 0..HAVOC_PER_SET / 2 {
        let (_, a) = &base[rng.below(base.len())];
        let (_, b) = &base[rng.below(base.len())];
        out.push((format!("havoc {i}"), havoc(a, b, &mut rng)));
    }
    out
}

/// Appends the systematic mutations of one vector.
fn mutate(name: &str, v: &[u8], out: &mut Vec<(String, Vec<u8>)>) {
    let has_fingerprint = v.len() >= HEADER_LEN + 8 && v[v.len() - 8..v.len() - 6] == [0x80, 0x28];
    for bit in 0..v.len() * 8 {
        let mut m = v.to_vec();
        m[bit / 8] ^= 1 << (bit % 8);
        if has_fingerprint {
            // With FINGERPRINT recomputed the change reaches the attribute decoders.
            let mut fixed = m.clone();
            if refresh_fingerprint(&mut fixed) {
                out.push((format!("{name} bit {bit} +fp"), fixed));
            }
        }
        out.push((format!("{name} bit {bit}"), m));
    }
    for len in 0..v.len() {
        out.push((format!("{name} truncated to {len}"), v[..len].to_vec()));
    }
    // The header length (STUN) or data length (ChannelData), then each attribute length.
    let mut fields = vec![2usize];
    let mut pos = HEADER_LEN;
    while pos + 4 <= v.len() && Message::parse(v).is_ok() {
        fields.push(pos + 2);
        let len = usize::from(u16::from_be_bytes([v[pos + 2], v[pos + 3]]));
        pos += 4 + len.div_ceil(4) * 4;
    }
    for at in fields {
        let old = u16::from_be_bytes([v[at], v[at + 1]]);
        let edits = [
            0,
            1,
            old.wrapping_sub(1),
            old.wrapping_add(1),
            old.wrapping_sub(4),
            old.wrapping_add(4),
            old.wrapping_add(8),
            old.wrapping_add(12),
            0x7FFF,
            0xFFFF,
        ];
        for new in edits {
            let mut m = v.to_vec();
            m[at..at + 2].copy_from_slice(&new.to_be_bytes());
            if has_fingerprint {
                let mut fixed = m.clone();
                if refresh_fingerprint(&mut fixed) {
                    out.push((format!("{name} length@{at}={new} +fp"), fixed));
                }
            }
            out.push((format!("{name} length@{at}={new}"), m));
        }
    }
    // Extra bytes, in the header's count or not.
    let mut m = v.to_vec();
    m.extend_from_slice(&[0, 0, 0, 0]);
    out.push((format!("{name} + 4 zero bytes"), m.clone()));
    if m.len() >= 4 {
        let len = u16::try_from(m.len().saturating_sub(HEADER_LEN)).unwrap_or(u16::MAX);
        m[2..4].copy_from_slice(&len.to_be_bytes());
        out.push((format!("{name} + empty attribute"), m));
    }
}

/// Recomputes a trailing FINGERPRINT in place; false when the bytes no longer end with one.
fn refresh_fingerprint(m: &mut [u8]) -> bool {
    if m.len() < HEADER_LEN + 8 || m[m.len() - 8..m.len() - 6] != [0x80, 0x28] {
        return false;
    }
    let pos = m.len() - 8;
    let crc = fingerprint(m, pos);
    m[pos + 4..].copy_from_slice(&crc.to_be_bytes());
    true
}

/// A seeded random mutation: a few byte writes, inserts, deletes and a splice from `b`.
fn havoc(a: &[u8], b: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut m = a.to_vec();
    for _ in 0..1 + rng.below(6) {
        match rng.below(5) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = rng.byte();
            }
            1 => {
                let i = rng.below(m.len() + 1);
                m.insert(i, rng.byte());
            }
            2 if !m.is_empty() => {
                let i = rng.below(m.len());
                m.remove(i);
            }
            3 if !b.is_empty() => {
                let from = rng.below(b.len());
                let to = from + rng.below(b.len() - from) + 1;
                let at = rng.below(m.len() + 1);
                m.splice(at..at, b[from..to].iter().copied());
            }
            _ if m.len() >= 4 => {
                // Keep the header length consistent so that the parse goes deeper.
                let len = u16::try_from(m.len().saturating_sub(HEADER_LEN)).unwrap_or(0);
                m[2..4].copy_from_slice(&len.to_be_bytes());
            }
            _ => {}
        }
    }
    if rng.below(2) == 0 {
        refresh_fingerprint(&mut m);
    }
    m
}

/// How many seeded random mutations to add.
const HAVOC_PER_SET: usize = 1_000;

/// A small deterministic generator (xorshift64*), so the mutation set never changes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Returns a value in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next().to_be_bytes()[0]
    }
}

thread_local! {
    /// Set while a fuzz function runs: its panics are collected, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// The last collected panic: location and message.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that records panics on quiet threads and prints the rest.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let print = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.get() {
                LAST_PANIC.set(Some(info.to_string().replace('\n', " ")));
            } else {
                print(info);
            }
        }));
    });
}
