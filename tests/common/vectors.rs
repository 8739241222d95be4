//! The test vectors in `tests/vectors/`: hex files, read the same way by every test that uses
//! them (the RFC 5769 conformance tests, the fuzz-corpus tests). Test files that need only
//! this include it with `#[path = "common/vectors.rs"] mod vectors;`.
#![allow(dead_code, reason = "each test crate uses a part of these helpers")]

use std::path::Path;

/// Decodes a vector file's text: hex digit pairs, whitespace ignored, `#` to the end of a line
/// a comment.
///
/// # Panics
///
/// Panics when the text is not whole bytes of hex digits (a broken vector file).
pub(crate) fn decode(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_ascii_whitespace()))
        .collect();
    hex::decode(&digits).unwrap_or_else(|e| panic!("a vector must be hex digit pairs: {e}"))
}

/// Returns every `*.hex` file in `tests/vectors/` with its decoded bytes, sorted by name.
pub(crate) fn all() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/vectors exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable vector");
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            (name.unwrap_or_default(), decode(&text))
        })
        .collect()
}
