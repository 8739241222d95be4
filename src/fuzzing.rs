//! Fuzz entry points of the `eeaturn` package (feature `fuzzing`): the TOML configuration and
//! the credential API's request body. The core's (STUN, ChannelData, stream framing, the
//! server, REST usernames) are in `eeaturn_core::fuzzing`. Each takes arbitrary bytes and may
//! panic only through its own assertions. Not part of the API; only `fuzz/` and
//! `tests/fuzz_corpus.rs` call it.

use std::path::Path;

use crate::config::{Config, Error};

pub use crate::api::fuzz_body as api_body;

/// Parses `data` (UTF-8, lossily) as a configuration file. It must not panic; an accepted
/// configuration builds the core's settings and parses again to the same; a refusal names a
/// key or says where the text is wrong, in a message that is not empty.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, Path::new(BASE)) {
        Ok(c) => {
            let server = c.server_config();
            assert!(!server.realm.is_empty(), "a realm is required");
            let again =
                Config::parse(&text, Path::new(BASE)).expect("an accepted config parses again");
            assert_eq!(
                format!("{:?}", again.server_config()),
                format!("{server:?}")
            );
        }
        Err(Error::Invalid { key, message }) => {
            assert!(!key.is_empty() && !message.is_empty(), "{key}: {message}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Where relative paths in a fuzzed configuration resolve: a directory that does not exist,
/// so that nothing is read from the machine.
const BASE: &str = "/nonexistent/eeaturn-fuzz";
