//! The evidence endpoints, for keys of scope `evidence` (docs/api.md, "Evidence"):
//! `/v1/evidence/report` (this node's residency report, built by
//! `eeaturn_evidence::report`), `/v1/evidence/export` (a tar stream of the segments,
//! statements and public key that `eeaturn evidence verify` needs offline) and
//! `/v1/evidence/status` (what the writer thread publishes, and the retention state).
//!
//! Reports and exports read files: they run on blocking threads, never on the runtime's.
//! One report and one export run at a time per node (more get `503 busy` with
//! `Retry-After`); a report that outlives `[api] request_timeout` gets its 408, and its
//! thread keeps the slot until it ends. An export streams file by file through a bounded
//! channel, so its memory does not grow with the directory.

use std::io::{self, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eeaturn_evidence::export::{self, Content};
use eeaturn_evidence::report::text::Lang;
use eeaturn_evidence::report::{self, ReportOptions};
use eeaturn_evidence::sign::PublicKey;
use eeaturn_evidence::time::Timestamp;
use eeaturn_evidence::verify::VerifyOptions;
use http_body::Frame;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::error::ApiError;
use super::issue::{admit, authenticated};
use super::{AppState, lock};
use crate::config::Scope;
use crate::shell::evidence::Status;

/// The node's evidence as the API sees it: where it is, whose it is, and what the writer
/// thread publishes.
#[derive(Clone)]
pub struct EvidenceSource {
    pub(crate) directory: PathBuf,
    pub(crate) node_id: String,
    pub(crate) site: String,
    pub(crate) retention: Duration,
    /// The public half of the signing key the relay holds.
    pub(crate) public_key: PublicKey,
    /// The node's earlier public keys (`evidence.previous_public_keys`): evidence signed
    /// before a key rotation is still trusted, and exported with its key.
    pub(crate) previous_public_keys: Vec<PublicKey>,
    pub(crate) status: Arc<Status>,
}

/// An [`EvidenceSource`] with its concurrency limits.
pub(super) struct Evidence {
    source: EvidenceSource,
    reports: Arc<Semaphore>,
    exports: Arc<Semaphore>,
}

impl Evidence {
    pub(super) fn new(source: EvidenceSource) -> Self {
        Self {
            source,
            reports: Arc::new(Semaphore::new(1)),
            exports: Arc::new(Semaphore::new(1)),
        }
    }
}

pub(super) async fn report(State(s): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let query = parts.uri.query().map(str::to_owned);
    answer(&s, &parts.headers, "evidence-report", |ev| async move {
        let q = Query::parse(query.as_deref(), &["from", "to", "format", "lang", "table"])?;
        let (from, to) = q.period()?;
        let format = match q.get("format").unwrap_or("html") {
            f @ ("html" | "json" | "csv") => f.to_owned(),
            _ => return Err(ApiError::invalid("format must be html, json or csv")),
        };
        let lang = match q.get("lang").unwrap_or("en") {
            "en" => Lang::En,
            "de" => Lang::De,
            _ => return Err(ApiError::invalid("lang must be de or en")),
        };
        let table = match q.get("table") {
            Some(_) if format != "csv" => {
                return Err(ApiError::invalid("table is for format=csv"));
            }
            Some(t) if !report::csv::TABLES.contains(&t) => {
                return Err(ApiError::invalid(format!(
                    "no table {t:?}; tables: {}",
                    report::csv::TABLES.join(", ")
                )));
            }
            Some(t) => t.to_owned(),
            None => DEFAULT_TABLE.to_owned(),
        };
        let permit = busy(&ev.reports, "a report")?;
        let src = ev.source.clone();
        let built = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            build_report(&src, from, to, &format, lang, &table)
        })
        .await
        .map_err(|_| internal("the report task failed"))??;
        let (content_type, body) = built;
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Ok(resp)
    })
    .await
}

pub(super) async fn export(State(s): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let query = parts.uri.query().map(str::to_owned);
    answer(&s, &parts.headers, "evidence-export", |ev| async move {
        let q = Query::parse(query.as_deref(), &["from", "to"])?;
        let (from, to) = q.period()?;
        let permit = busy(&ev.exports, "an export")?;
        let src = ev.source.clone();
        let (tx, rx) = mpsc::channel(EXPORT_CHUNKS);
        let node = dir_name(&src.node_id);
        let filename = format!(
            "eeaturn-evidence-{node}-{}-{}.tar",
            from.compact(),
            to.compact()
        );
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let out = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            if let Err(e) = write_export(&src, from, to, out) {
                // The client has gone, or a file could not be read: the stream ends with an
                // error, so the client sees a broken transfer rather than a short tar.
                tracing::warn!(target: "eeaturn::api", error = %e, "the evidence export ended early");
                let _ = tx.blocking_send(Err(e));
            }
        });
        let mut resp = Body::new(ChunkBody { rx }).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-tar"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        Ok(resp)
    })
    .await
}

pub(super) async fn status(State(s): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let query = parts.uri.query().map(str::to_owned);
    answer(&s, &parts.headers, "evidence-status", |ev| async move {
        Query::parse(query.as_deref(), &[])?;
        let src = ev.source.clone();
        let dir = src.directory.clone();
        let retained = tokio::task::spawn_blocking(move || export::retained(&dir))
            .await
            .map_err(|_| internal("the status task failed"))?
            .map_err(|e| {
                tracing::error!(target: "eeaturn::api", error = %e, "reading the evidence directory failed");
                internal("the evidence directory could not be read")
            })?;
        let st = &src.status;
        let head = *lock(&st.head);
        let ms = |v: u64| (v > 0).then(|| Timestamp::from_unix_millis(v).to_string());
        let pruned_seq = st.pruned_up_to_seq.load(Ordering::Relaxed);
        let pruned_up_to = (pruned_seq > 0)
            .then_some(pruned_seq)
            .or_else(|| retained.retained_from_seq.checked_sub(1).filter(|s| *s > 0));
        let body = json!({
            "node": src.node_id,
            "site": src.site,
            "key_fingerprint": format!("sha256:{}", src.public_key.fingerprint()),
            "head": head.map(|h| json!({"seq": h.seq, "hash": h.hash.to_hex()})),
            "last_checkpoint": ms(st.last_checkpoint_ms.load(Ordering::Relaxed)),
            "admission_closed": st.admission_closed.load(Ordering::Relaxed),
            "records_written": st.records_written.load(Ordering::Relaxed),
            "retention": {
                "configured_s": src.retention.as_secs(),
                "oldest_record": retained.oldest_time.map(|t| t.to_string()),
                "oldest_seq": retained.oldest_seq,
                "pruned_up_to_seq": pruned_up_to,
                "last_pruned": ms(st.last_prune_ms.load(Ordering::Relaxed)),
            },
        });
        Ok(axum::Json(body).into_response())
    })
    .await
}

/// Authenticates, checks the scope and the rate limit, runs `work` and counts the answer.
async fn answer<F, Fut>(
    s: &AppState,
    headers: &HeaderMap,
    endpoint: &'static str,
    work: F,
) -> Response
where
    F: FnOnce(Arc<Evidence>) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let cfg = s.settings.borrow().clone();
    let key = match authenticated(s, &cfg.keys, headers, endpoint) {
        Ok(k) => k,
        Err(refused) => return refused.into_response(),
    };
    let result = async {
        admit(s, &cfg, &key, Scope::Evidence)?;
        let Some(ev) = s.evidence.clone() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_evidence",
                "this node keeps no evidence ([evidence] enabled = false)",
            ));
        };
        work(ev).await
    }
    .await;
    match result {
        Ok(resp) => {
            s.count(&key.name, endpoint, "ok");
            tracing::info!(target: "eeaturn::api", key = %key.name, endpoint, "answered an evidence request");
            resp
        }
        Err(e) => {
            s.count(&key.name, endpoint, e.code);
            tracing::info!(target: "eeaturn::api", key = %key.name, endpoint, error = e.code, "refused an API request");
            e.into_response()
        }
    }
}

/// Builds and renders the report of this node, on a blocking thread.
fn build_report(
    src: &EvidenceSource,
    from: Timestamp,
    to: Timestamp,
    format: &str,
    lang: Lang,
    table: &str,
) -> Result<(&'static str, Vec<u8>), ApiError> {
    let node = dir_name(&src.node_id);
    let opts = ReportOptions {
        from,
        to,
        generated_at: Timestamp::from_system_time(now_wall()),
        list_limit: LIST_LIMIT,
        dirs_shown: vec![node.clone()],
        trust_shown: trust_files(&node, src),
        assumed_regions: vec!["EEA".to_owned()],
    };
    let trust = VerifyOptions {
        trust: std::iter::once(src.public_key)
            .chain(src.previous_public_keys.iter().copied())
            .collect(),
        ..VerifyOptions::default()
    };
    let r = report::build(
        std::slice::from_ref(&src.directory),
        &trust,
        &opts,
        &mut |_| {},
    )
    .map_err(|e| {
        tracing::error!(target: "eeaturn::api", error = %e, "building the evidence report failed");
        internal("the evidence directory could not be read")
    })?;
    Ok(match format {
        "json" => {
            let mut json = serde_json::to_vec_pretty(&r).map_err(|_| internal("JSON"))?;
            json.push(b'\n');
            ("application/json", json)
        }
        "csv" => {
            let mut buf = Vec::new();
            report::csv::write_table(&r, table, &mut buf)
                .map_err(|_| internal("writing the CSV table failed"))?;
            ("text/csv; charset=utf-8", buf)
        }
        _ => (
            "text/html; charset=utf-8",
            report::html::render(&r, lang).into_bytes(),
        ),
    })
}

/// Writes the tar of the export: `<node>/segments/...` and `<node>.pub`.
fn write_export(
    src: &EvidenceSource,
    from: Timestamp,
    to: Timestamp,
    out: ChunkWriter,
) -> io::Result<()> {
    let node = dir_name(&src.node_id);
    let mut tar = tar::Builder::new(out);
    let mtime = now_wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = |len: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    let keys = std::iter::once(src.public_key).chain(src.previous_public_keys.iter().copied());
    for (name, key) in trust_files(&node, src).into_iter().zip(keys) {
        let text = key.to_text();
        tar.append_data(&mut header(text.len() as u64), name, text.as_bytes())?;
    }
    export::export_files(&src.directory, from, to, &mut |f| {
        let path = format!("{node}/{}", f.name);
        match f.content {
            Content::Bytes(b) => tar.append_data(&mut header(b.len() as u64), path, &b[..]),
            Content::File { file, len } => {
                tar.append_data(&mut header(len), path, io::Read::take(file, len))
            }
        }
    })
    .map_err(io::Error::other)?;
    tar.into_inner()?.finish()
}

/// The names of the public key files an export holds and a report's "verify yourself" command
/// passes with `--trust`: `<node>.pub` for the current key, then
/// `<node>.previous-<first 12 hex digits of the fingerprint>.pub` for each earlier one.
fn trust_files(node: &str, src: &EvidenceSource) -> Vec<String> {
    std::iter::once(format!("{node}.pub"))
        .chain(src.previous_public_keys.iter().map(|k| {
            let hex = k.fingerprint().to_hex();
            format!("{node}.previous-{}.pub", &hex[..12])
        }))
        .collect()
}

/// The query parameters of an evidence request, each at most once.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::invalid(if allowed.is_empty() {
                    "this endpoint takes no query parameters".to_owned()
                } else {
                    format!(
                        "unknown query parameter; only {} are accepted",
                        allowed.join(", ")
                    )
                }));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::invalid(format!("{name} is given twice")));
            }
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `from` and `to`: required; a date is a whole UTC day (`to` includes its day).
    fn period(&self) -> Result<(Timestamp, Timestamp), ApiError> {
        let from = parse_bound(self.get("from"), "from", false)?;
        let to = parse_bound(self.get("to"), "to", true)?;
        if to <= from {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_period",
                "to must not be before from",
            ));
        }
        Ok((from, to))
    }
}

/// A date (`2026-12-01`, a whole UTC day) or an RFC 3339 UTC time (`2026-12-01T06:00:00Z`,
/// with or without milliseconds), as `eeaturn report` takes them.
fn parse_bound(v: Option<&str>, name: &str, end_of_day: bool) -> Result<Timestamp, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_period",
            format!(
                "{name} must be a date (2026-12-01) or an RFC 3339 UTC time (2026-12-01T00:00:00Z) from 1970 on"
            ),
        )
    };
    let s = v.ok_or_else(|| ApiError::invalid(format!("{name} is required")))?;
    let full = match s.len() {
        10 => format!("{s}T00:00:00.000Z"),
        20 if s.ends_with('Z') => format!("{}.000Z", &s[..19]),
        _ => s.to_owned(),
    };
    let t = Timestamp::parse(&full).ok_or_else(bad)?;
    if s.len() == 10 && end_of_day {
        return Ok(Timestamp::from_unix_millis(t.unix_millis() + 86_400_000));
    }
    Ok(t)
}

/// Takes the one slot of `slots`, or answers `503 busy`.
fn busy(slots: &Arc<Semaphore>, what: &str) -> Result<OwnedSemaphorePermit, ApiError> {
    slots.clone().try_acquire_owned().map_err(|_| {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{what} of this node's evidence is being made; retry later"),
        );
        e.retry_after = Some(BUSY_RETRY_AFTER);
        e
    })
}

fn internal(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        message.to_owned(),
    )
}

/// The node id as a file name: characters other than `A-Za-z0-9._-` become `_`.
fn dir_name(node: &str) -> String {
    let s: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// A `Write` that hands chunks of [`CHUNK`] bytes to the response body, waiting while the
/// channel is full (so memory stays at [`EXPORT_CHUNKS`] chunks); fails once the client is
/// gone.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    fn finish(mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The export's response body: the chunks the blocking writer sends.
struct ChunkBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data)))
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the API is shell code, where clocks are read"
)]
fn now_wall() -> SystemTime {
    SystemTime::now()
}

/// The CSV table answered when `table` is not given.
const DEFAULT_TABLE: &str = "summary";
/// How many refused attempts (and other growing lists) a report lists, as `eeaturn report`.
const LIST_LIMIT: usize = 1000;
/// Bytes per chunk of an export.
const CHUNK: usize = 64 << 10;
/// Chunks of an export in flight at most.
const EXPORT_CHUNKS: usize = 4;
/// Seconds a caller is asked to wait while a report or export of the node runs.
const BUSY_RETRY_AFTER: u64 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_take_dates_and_utc_times() {
        let q = Query::parse(Some("from=2026-12-01&to=2026-12-01"), &["from", "to"]).unwrap();
        let (from, to) = q.period().unwrap();
        assert_eq!(from.to_string(), "2026-12-01T00:00:00.000Z");
        assert_eq!(to.to_string(), "2026-12-02T00:00:00.000Z");
        let q = Query::parse(
            Some("from=2026-12-01T06:00:00Z&to=2026-12-01T07:00:00.500Z"),
            &["from", "to"],
        )
        .unwrap();
        let (from, to) = q.period().unwrap();
        assert_eq!(from.to_string(), "2026-12-01T06:00:00.000Z");
        assert_eq!(to.to_string(), "2026-12-01T07:00:00.500Z");
        for bad in [
            "from=2026-12-02&to=2026-12-01",
            "from=1969-12-31&to=2026-12-01",
            "from=2026-12-01T06:00:00%2B01:00&to=2026-12-02",
            "from=x&to=2026-12-01",
        ] {
            let q = Query::parse(Some(bad), &["from", "to"]).unwrap();
            assert_eq!(q.period().unwrap_err().code, "invalid_period", "{bad}");
        }
        let q = Query::parse(Some("from=2026-12-01"), &["from", "to"]).unwrap();
        assert_eq!(q.period().unwrap_err().code, "invalid_request");
        assert!(Query::parse(Some("from=a&from=b"), &["from"]).is_err());
        assert!(Query::parse(Some("x=1"), &["from"]).is_err());
        assert!(Query::parse(Some("x=1"), &[]).is_err());
    }

    #[test]
    fn node_ids_become_safe_file_names() {
        assert_eq!(dir_name("fra-1"), "fra-1");
        assert_eq!(dir_name("a/b c"), "a_b_c");
        assert_eq!(dir_name("../x"), "_.._x");
        assert_eq!(dir_name(".."), "_..");
    }
}
