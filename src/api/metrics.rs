//! The API's request counters (the shell turns them into metrics, `crate::metrics`).

use std::sync::{Arc, Mutex};

/// Requests per (key name, endpoint, result).
pub(super) type Counters = Arc<Mutex<crate::metrics::ApiCounters>>;
