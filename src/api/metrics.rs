//! The API's request counters and their Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Requests per (key name, endpoint, result).
pub(super) type Counters = Arc<Mutex<BTreeMap<(String, &'static str, &'static str), u64>>>;

/// Appends `counters` to a Prometheus exposition.
pub(super) fn render(
    counters: &BTreeMap<(String, &'static str, &'static str), u64>,
    out: &mut String,
) {
    let _ = writeln!(
        out,
        "# HELP eeaturn_api_requests_total Requests to the API's /v1/ endpoints, by key name (none: no valid key), endpoint and result (issued, ok or the error code)."
    );
    let _ = writeln!(out, "# TYPE eeaturn_api_requests_total counter");
    for ((key, endpoint, result), n) in counters {
        let _ = writeln!(
            out,
            "eeaturn_api_requests_total{{key=\"{key}\",endpoint=\"{endpoint}\",result=\"{result}\"}} {n}"
        );
    }
}
