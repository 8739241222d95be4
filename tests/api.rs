//! The credential API (docs/api.md) against the relay running in-process: credentials it
//! issues allocate over UDP, TCP and TLS and expire on time; API keys, scopes, body and TTL
//! checks, the rate limit, security and CORS headers, the health probes; and
//! docs/api/openapi.yaml kept true (its routes are `eeaturn::api::ROUTES`, real answers match
//! its schemas).
//!
//! The HTTP client is reqwest over rustls trusting only the development certificate
//! `config/dev-cert.pem` (server name "localhost"). Passwords are checked with an HMAC-SHA1
//! computed here with `ring`, not with the relay's own code. Addresses are those of the loopback
//! test world (`geo/testdata`): clients on 127.0.1.0/24 (DE), the echo peer on 127.0.2.1 (FR).
//! Signing-secret rotation needs SIGHUP and is covered by tests/interop/api.sh against the real
//! binary.

#![allow(clippy::unwrap_used, reason = "a failed step fails the test")]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Relayed, Response, StunError, TIMEOUT, TurnClient, spawn_echo_peer, wall_now};
use eeaturn::config::Config;
use eeaturn::credentials::Credential;
use eeaturn::shell::Running;
use eeaturn::stun::attr;
use eeaturn::stun::integrity::long_term_key_md5;
use eeaturn::stun::{Class, MessageBuilder, MessageType, Method, TransactionId};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio::time::{Instant, sleep, timeout};
use tokio_rustls::TlsConnector;

/// The API key of scope `credentials` (its SHA-256 is in the config).
const SIGNALING_KEY: &str = "eeaturn-test-signaling-key-5d1f0c9a7b3e";
/// The name of [`SIGNALING_KEY`] in the config; TURN usernames carry it.
const SIGNALING_NAME: &str = "signaling";
/// An API key of scope `evidence`.
const EVIDENCE_KEY: &str = "eeaturn-test-evidence-key-81c4e2f6a0d9";
/// The TURN URIs of the test config.
const URIS: [&str; 2] = [
    "turn:127.0.0.1:3478?transport=udp",
    "turns:localhost:5349?transport=tcp",
];
/// `[api] default_ttl` of the test config (not the built-in 1h, so that the default is seen).
const DEFAULT_TTL: u64 = 1800;
/// `[api] max_ttl` of the test config.
const MAX_TTL: u64 = 7200;
/// A rate limit no test here reaches, except the one that tests it.
const GENEROUS_LIMIT: &str = "rate_limit = 6000\nrate_burst = 1000";
/// First relay port of this file's configs (apart from the other test files' ranges).
const RELAY_PORT_MIN: u16 = 25_000;
/// Last relay port of this file's configs.
const RELAY_PORT_MAX: u16 = 25_999;
/// The largest body the API accepts. See docs/api.md, "Abuse limits and headers".
const MAX_BODY: usize = 4096;
/// Query parameters that look like a key and get any request refused.
const KEY_LIKE_PARAMS: [&str; 9] = [
    "key",
    "api_key",
    "apikey",
    "api-key",
    "token",
    "access_token",
    "auth",
    "authorization",
    "bearer",
];

// --- the credentials and what the relay does with them -------------------------------------

#[tokio::test]
async fn a_credential_allocates_over_udp_tcp_and_tls() {
    let s = start(GENEROUS_LIMIT).await;
    let r = s
        .post("/v1/credentials", &json!({"user": "u-alice", "ttl": 600}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let body = r.json();
    let credential = check_credential(&body, Some("u-alice"), 600);
    assert_eq!(body["uris"], json!(URIS), "uris are [api] uris");

    // UDP: allocate, then a Send indication to an echo peer comes back as a Data indication.
    let peer = spawn_echo_peer("127.0.2.1").await;
    let mut udp = TurnClient::bind("127.0.1.1", s.udp, credential.clone()).await;
    let allocation = udp
        .allocate()
        .await
        .unwrap_or_else(|e| panic!("UDP Allocate with the API's credential: {e:?}"));
    assert!(in_relay_range(allocation.relayed()), "{allocation:?}");
    udp.create_permission(&[peer])
        .await
        .expect("CreatePermission with the API's credential");
    udp.send_indication(peer, b"issued by the API").await;
    assert_eq!(
        udp.recv_relayed().await,
        Relayed::Data {
            peer,
            data: b"issued by the API".to_vec()
        },
        "relayed through the allocation"
    );

    for tls in [false, true] {
        let server = if tls { s.tls } else { s.tcp };
        let relayed = stream_allocate(tls, server, "127.0.1.2", &credential)
            .await
            .unwrap_or_else(|e| panic!("Allocate over {} : {e:?}", transport(tls)));
        assert!(in_relay_range(relayed), "{relayed}");
    }
    s.stop().await;
}

#[tokio::test]
async fn ice_servers_have_the_webrtc_shape_and_their_credential_allocates() {
    let s = start(GENEROUS_LIMIT).await;
    let r = s.post("/v1/ice-servers", &json!({"user": "u-bob"})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let body = r.json();
    let keys: BTreeSet<&str> = object_keys(&body);
    assert_eq!(keys, BTreeSet::from(["iceServers", "ttl"]), "{body}");
    assert_eq!(body["ttl"], json!(DEFAULT_TTL), "no ttl: [api] default_ttl");
    let servers = body["iceServers"]
        .as_array()
        .expect("iceServers is an array");
    assert_eq!(servers.len(), 1, "one ICE server entry: {body}");
    let server = &servers[0];
    assert_eq!(
        object_keys(server),
        BTreeSet::from(["credential", "urls", "username"]),
        "RTCIceServer fields: {server}"
    );
    assert_eq!(server["urls"], json!(URIS), "urls are [api] uris");
    let as_credential = json!({
        "username": server["username"],
        "password": server["credential"],
        "ttl": body["ttl"],
    });
    let credential = check_credential(&as_credential, Some("u-bob"), DEFAULT_TTL);

    let mut udp = TurnClient::bind("127.0.1.3", s.udp, credential).await;
    udp.allocate()
        .await
        .unwrap_or_else(|e| panic!("Allocate with the iceServers credential: {e:?}"));
    s.stop().await;
}

#[tokio::test]
async fn no_user_and_an_empty_body_mean_the_defaults() {
    let s = start(GENEROUS_LIMIT).await;
    for (what, request) in [
        (
            "empty body",
            s.request(reqwest::Method::POST, "/v1/credentials")
                .header("content-type", "application/json"),
        ),
        (
            "{}",
            s.request(reqwest::Method::POST, "/v1/credentials")
                .json(&json!({})),
        ),
        ("GET", s.request(reqwest::Method::GET, "/v1/credentials")),
    ] {
        let r = send(request).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {r:?}");
        let credential = check_credential(&r.json(), None, DEFAULT_TTL);
        if what == "GET" {
            let mut udp = TurnClient::bind("127.0.1.4", s.udp, credential).await;
            udp.allocate()
                .await
                .unwrap_or_else(|e| panic!("Allocate with a username without user: {e:?}"));
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn get_forms_take_user_and_ttl_from_the_query() {
    let s = start(GENEROUS_LIMIT).await;
    let r = s.get("/v1/credentials?user=u-carol&ttl=90").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    check_credential(&r.json(), Some("u-carol"), 90);

    let r = s.get("/v1/ice-servers?ttl=120&user=u-dave").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let body = r.json();
    assert_eq!(body["ttl"], json!(120));
    let server = &body["iceServers"][0];
    check_credential(
        &json!({"username": server["username"], "password": server["credential"], "ttl": 120}),
        Some("u-dave"),
        120,
    );

    let over_max = format!("ttl={}", MAX_TTL + 1);
    for (query, code) in [
        ("ttl=0", "invalid_ttl"),
        (over_max.as_str(), "invalid_ttl"),
        ("ttl=abc", "invalid_request"),
        ("ttl=", "invalid_request"),
        ("user=", "invalid_request"),
        ("user=a%3Ab", "invalid_request"),
        ("user=a%20b", "invalid_request"),
        ("colour=blue", "invalid_request"),
    ] {
        for path in ["/v1/credentials", "/v1/ice-servers"] {
            let r = s.get(&format!("{path}?{query}")).await;
            r.assert_error(
                StatusCode::BAD_REQUEST,
                code,
                &format!("GET {path}?{query}"),
            );
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn an_expired_credential_is_refused_on_allocate() {
    let s = start(GENEROUS_LIMIT).await;
    let r = s
        .post("/v1/credentials", &json!({"user": "u-erin", "ttl": 1}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let credential = check_credential(&r.json(), Some("u-erin"), 1);
    sleep(Duration::from_millis(2500)).await;
    let mut udp = TurnClient::bind("127.0.1.5", s.udp, credential).await;
    let refused = udp.allocate().await.map(|a| a.relayed);
    assert_eq!(
        refused.map_err(|e| e.code),
        Err(401),
        "Allocate with a credential that expired"
    );
    s.stop().await;
}

// --- API keys and scopes -----------------------------------------------------------------------

#[tokio::test]
async fn requests_without_a_good_bearer_key_are_refused() {
    let s = start(GENEROUS_LIMIT).await;
    for path in ["/v1/credentials", "/v1/ice-servers"] {
        let body = json!({"user": "u-frank", "ttl": 60});
        let post = || s.raw(reqwest::Method::POST, path).json(&body);

        let r = send(post()).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "missing_api_key", "no key");

        let r = send(post().bearer_auth("not-a-key-of-this-relay")).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "invalid_api_key", "wrong key");

        let r = send(post().basic_auth("signaling", Some(SIGNALING_KEY))).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "missing_api_key", "Basic auth");

        let r = send(post().basic_auth(SIGNALING_KEY, None::<&str>)).await;
        r.assert_error(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "Basic auth, key as user",
        );

        let r = send(post().bearer_auth(EVIDENCE_KEY)).await;
        r.assert_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "a key of scope evidence",
        );

        // A key-like query parameter is refused whatever else the request holds: here a valid
        // header and the valid key itself in the query.
        for name in KEY_LIKE_PARAMS {
            let url = format!("{path}?{name}={SIGNALING_KEY}");
            let r = send(s.request(reqwest::Method::POST, &url).json(&body)).await;
            r.assert_error(
                StatusCode::UNAUTHORIZED,
                "api_key_in_query",
                &format!("POST {url}"),
            );
            let url = format!("{path}?user=u-frank&{name}=x");
            let r = send(s.request(reqwest::Method::GET, &url)).await;
            r.assert_error(
                StatusCode::UNAUTHORIZED,
                "api_key_in_query",
                &format!("GET {url}"),
            );
        }
        let r = send(s.raw(
            reqwest::Method::GET,
            &format!("{path}?api_key={SIGNALING_KEY}"),
        ))
        .await;
        r.assert_error(
            StatusCode::UNAUTHORIZED,
            "api_key_in_query",
            "the key in the query and no header",
        );
    }
    // And the good key still works after all that.
    let r = s.post("/v1/credentials", &json!({"user": "u-frank"})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    s.stop().await;
}

// --- what a request may hold ---------------------------------------------------------------------

#[tokio::test]
async fn ttl_user_and_body_are_checked() {
    let s = start(GENEROUS_LIMIT).await;
    for path in ["/v1/credentials", "/v1/ice-servers"] {
        let long_user = "u".repeat(128);
        let ok = [
            json!({"ttl": 1}),
            json!({"ttl": MAX_TTL}),
            json!({"user": long_user}),
            json!({"user": "!~#$%&'()*+,-./0123456789;<=>?@AZ[\\]^_`az{|}"}),
        ];
        for body in ok {
            let r = s.post(path, &body).await;
            assert_eq!(r.status, StatusCode::OK, "POST {path} {body}: {r:?}");
        }
        let refused = [
            (json!({"ttl": 0}), "invalid_ttl"),
            (json!({"ttl": MAX_TTL + 1}), "invalid_ttl"),
            (json!({"ttl": 86_400 * 7}), "invalid_ttl"),
            (json!({"ttl": "60"}), "invalid_request"),
            (json!({"ttl": 1.5}), "invalid_request"),
            (json!({"ttl": null}), "invalid_request"),
            (json!({"user": null}), "invalid_request"),
            (json!({"user": 7}), "invalid_request"),
            (json!({"user": ""}), "invalid_request"),
            (json!({"user": "u".repeat(129)}), "invalid_request"),
            (json!({"user": "a:b"}), "invalid_request"),
            (json!({"user": "a b"}), "invalid_request"),
            (json!({"user": "caf\u{e9}"}), "invalid_request"),
            (json!({"user": "tab\there"}), "invalid_request"),
            (
                json!({"user": "u", "ttl": 60, "admin": true}),
                "invalid_request",
            ),
            (json!(["u", 60]), "invalid_request"),
        ];
        for (body, code) in refused {
            let r = s.post(path, &body).await;
            r.assert_error(
                StatusCode::BAD_REQUEST,
                code,
                &format!("POST {path} {body}"),
            );
        }
        // A negative TTL is either not a TTL or out of range; both are 400.
        let r = s.post(path, &json!({"ttl": -1})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "ttl -1: {r:?}");
        let code = r.error_code();
        assert!(
            code == "invalid_request" || code == "invalid_ttl",
            "ttl -1: {r:?}"
        );

        let post = || s.request(reqwest::Method::POST, path);
        let r = send(
            post()
                .header("content-type", "application/json")
                .body("{\"user\":"),
        )
        .await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_request", "truncated JSON");
        // Only a body of zero bytes means "all defaults": whitespace alone is not JSON.
        let r = send(
            post()
                .header("content-type", "application/json")
                .body(" \t\n"),
        )
        .await;
        r.assert_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "whitespace only",
        );

        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/xml",
        ] {
            let r = send(post().header("content-type", ct).body(r#"{"user":"u"}"#)).await;
            r.assert_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                &format!("POST {path} as {ct}"),
            );
        }
        let r = send(post().body(r#"{"user":"u"}"#)).await;
        r.assert_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a body without content-type",
        );
        let r = send(
            post()
                .header("content-type", "application/json; charset=utf-8")
                .body(r#"{"user":"u"}"#),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "application/json; charset=utf-8: {r:?}"
        );

        // JSON padded with whitespace: up to 4096 bytes is fine, one more is too large.
        let fits = padded_body(MAX_BODY);
        let r = send(post().header("content-type", "application/json").body(fits)).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "a body of {MAX_BODY} bytes: {r:?}"
        );
        let over = padded_body(MAX_BODY + 1);
        let r = send(post().header("content-type", "application/json").body(over)).await;
        r.assert_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "a body of 4097 bytes",
        );
        let huge = padded_body(1 << 20);
        let r = send(post().header("content-type", "application/json").body(huge)).await;
        r.assert_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "a body of 1 MiB",
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let s = start(GENEROUS_LIMIT).await;
    let r = s.get("/v1/nothing-here").await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found", "GET /v1/nothing-here");
    let r = send(s.request(reqwest::Method::DELETE, "/v1/credentials")).await;
    r.assert_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "DELETE /v1/credentials",
    );
    let r = send(
        s.request(reqwest::Method::PUT, "/v1/ice-servers")
            .json(&json!({})),
    )
    .await;
    r.assert_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "PUT /v1/ice-servers",
    );
    s.stop().await;
}

#[tokio::test]
async fn a_request_slower_than_request_timeout_gets_408() {
    let s = start(&format!("{GENEROUS_LIMIT}\nrequest_timeout = \"1s\"")).await;
    let mut tls = tls_to(s.api).await;
    let head = format!(
        "POST /v1/credentials HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {SIGNALING_KEY}\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{{\"user\":"
    );
    let started = Instant::now();
    tls.write_all(head.as_bytes())
        .await
        .expect("writing the request head");
    tls.flush().await.expect("flushing");
    let answer = read_answer(&mut tls, "request_timeout").await;
    let elapsed = started.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a stalled body gets 408 after request_timeout: {answer:?}"
    );
    assert!(
        answer.contains("\"error\":\"request_timeout\""),
        "the 408 carries its error code: {answer:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}, request_timeout is 1 s"
    );
    s.stop().await;
}

/// A client that writes the whole body before it reads (as Python's `requests` does) must still
/// get the 413, and must not lose its next request on a connection the server silently closed.
#[tokio::test]
async fn an_oversized_body_sent_whole_gets_413_and_the_connection_says_what_follows() {
    let s = start(GENEROUS_LIMIT).await;
    for size in [MAX_BODY + 1, 5000, 70_000, 300_000] {
        let mut tls = tls_to(s.api).await;
        let head = format!(
            "POST /v1/credentials HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {SIGNALING_KEY}\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(padded_body(size).as_bytes());
        let written = timeout(TIMEOUT, async {
            tls.write_all(&request).await?;
            tls.flush().await
        })
        .await;
        assert!(
            matches!(written, Ok(Ok(()))),
            "a body of {size} bytes: the server broke the connection while it was being sent: {written:?}"
        );
        let answer = read_response(&mut tls).await;
        let (head, body) = answer.unwrap_or_else(|e| {
            panic!("a body of {size} bytes sent whole: no 413 answer, the connection ended: {e}")
        });
        assert!(head.starts_with("HTTP/1.1 413"), "{size} bytes: {head}");
        assert!(body.contains("payload_too_large"), "{size} bytes: {body}");
        // Either the server said it closes, or it read the body away and serves the next
        // request on this connection.
        if !head.to_ascii_lowercase().contains("\r\nconnection: close") {
            let next = "GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n";
            tls.write_all(next.as_bytes()).await.unwrap_or_else(|e| {
                panic!("{size} bytes: the 413 kept the connection open, yet it is gone: {e}")
            });
            tls.flush().await.expect("flushing");
            let (head, _) = read_response(&mut tls).await.unwrap_or_else(|e| {
                panic!(
                    "{size} bytes: the 413 did not say `connection: close`, yet the next request on the connection is lost: {e}"
                )
            });
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "{size} bytes, then /healthz: {head}"
            );
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_the_connection_closes() {
    let s = start(GENEROUS_LIMIT).await;
    let body = r#"{"user":"u-smuggle"}"#;
    // Both framings, in both orders and spellings; a proxy in front could pick either.
    for (cl, te) in [
        ("Content-Length", "Transfer-Encoding"),
        ("content-length", "transfer-encoding"),
    ] {
        for te_first in [false, true] {
            let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
            let (a, b) = (
                format!("{cl}: {}\r\n", body.len()),
                format!("{te}: chunked\r\n"),
            );
            let framing = if te_first { b + &a } else { a + &b };
            let request = format!(
                "POST /v1/credentials HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {SIGNALING_KEY}\r\ncontent-type: application/json\r\n{framing}\r\n{chunked}"
            );
            let mut tls = tls_to(s.api).await;
            tls.write_all(request.as_bytes()).await.expect("writing");
            tls.flush().await.expect("flushing");
            let (head, answer) = read_response(&mut tls)
                .await
                .unwrap_or_else(|e| panic!("{framing:?}: no answer: {e}"));
            assert!(head.starts_with("HTTP/1.1 400"), "{framing:?}: {head}");
            assert!(
                answer.contains("conflicting_lengths"),
                "{framing:?}: {answer}"
            );
            assert!(!answer.contains("password"), "nothing was issued: {answer}");
            assert!(
                head.to_ascii_lowercase().contains("\r\nconnection: close"),
                "{framing:?}: the server says it closes (RFC 9112 section 6.1): {head}"
            );
            // And it does: nothing more is read from this connection.
            let mut rest = Vec::new();
            let end = timeout(TIMEOUT, tls.read_to_end(&mut rest)).await;
            assert!(
                matches!(end, Ok(Ok(_)) | Ok(Err(_))),
                "{framing:?}: the connection stayed open"
            );
        }
    }
    // Either framing alone is served.
    let mut tls = tls_to(s.api).await;
    let request = format!(
        "POST /v1/credentials HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {SIGNALING_KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.expect("writing");
    tls.flush().await.expect("flushing");
    let (head, _) = read_response(&mut tls).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "chunked alone: {head}");
    s.stop().await;
}

#[tokio::test]
async fn failed_key_attempts_are_throttled_per_source_with_retry_after() {
    let s = start(GENEROUS_LIMIT).await;
    let guess = |n: usize| {
        s.raw(reqwest::Method::POST, "/v1/credentials")
            .bearer_auth(&format!("guess-{n}"))
            .json(&json!({}))
    };
    // Ten wrong keys are answered as such...
    for n in 0..10 {
        send(guess(n)).await.assert_error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "a wrong key",
        );
    }
    // ... then every /v1/ request from this address gets 429, before its key is looked at:
    // a right key is not told from a wrong one.
    let r = send(guess(10)).await;
    r.assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        "the 11th wrong key",
    );
    let secs: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"))
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=6).contains(&secs), "Retry-After {secs} s");
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff"),
        "the security headers are there too"
    );
    let r = s.post("/v1/credentials", &json!({"user": "u-ivan"})).await;
    r.assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        "the right key from the same address",
    );
    // Requests without a key, and the health probes, are not guesses and not throttled here.
    assert_eq!(
        s.get_unauthenticated("/healthz").await.status,
        StatusCode::OK
    );
    // Another source (another loopback address) is not affected.
    let other = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(dev_cert_path()).expect("the cert"))
                .expect("PEM"),
        )
        .local_address(Some("127.0.0.2".parse().expect("an address")))
        .resolve("localhost", s.api)
        .timeout(TIMEOUT)
        .build()
        .expect("a client");
    let r = other
        .post(format!("https://localhost:{}/v1/credentials", s.api.port()))
        .bearer_auth(SIGNALING_KEY)
        .json(&json!({"user": "u-ivan"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), StatusCode::OK, "another address is served");
    s.stop().await;
}

// --- rate limit, headers, CORS, health -----------------------------------------------------------

#[tokio::test]
async fn the_fourth_rapid_request_of_a_key_is_rate_limited() {
    let s = start("rate_limit = 60\nrate_burst = 3").await;
    for i in 1..=3 {
        let r = s.post("/v1/credentials", &json!({"user": "u-gina"})).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "request {i} of a burst of 3: {r:?}"
        );
    }
    let r = s.get("/v1/ice-servers?user=u-gina").await;
    r.assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "the 4th request",
    );
    let retry_after = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"));
    let secs: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is whole seconds: {retry_after:?}"));
    assert!(
        (1..=60).contains(&secs),
        "Retry-After {secs} s (one request per second refills)"
    );
    // The health probes are not rate limited.
    assert_eq!(
        s.get_unauthenticated("/healthz").await.status,
        StatusCode::OK
    );
    s.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_no_cors_by_default() {
    let s = start(GENEROUS_LIMIT).await;
    let origin = "https://app.example";
    let answers = [
        send(
            s.request(reqwest::Method::POST, "/v1/credentials")
                .header("origin", origin)
                .json(&json!({"user": "u-hana"})),
        )
        .await,
        send(
            s.raw(reqwest::Method::GET, "/v1/credentials")
                .header("origin", origin),
        )
        .await,
        send(
            s.request(reqwest::Method::GET, "/v1/credentials?ttl=0")
                .header("origin", origin),
        )
        .await,
        send(
            s.raw(reqwest::Method::GET, "/healthz")
                .header("origin", origin),
        )
        .await,
        send(
            s.raw(reqwest::Method::GET, "/readyz")
                .header("origin", origin),
        )
        .await,
        send(
            s.request(reqwest::Method::GET, "/nowhere")
                .header("origin", origin),
        )
        .await,
        send(
            s.raw(reqwest::Method::OPTIONS, "/v1/credentials")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
        )
        .await,
    ];
    for r in &answers {
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(
                r.header(name).as_deref(),
                Some(value),
                "{name} on {} {}: {r:?}",
                r.method,
                r.path
            );
        }
        let cors: Vec<&str> = r
            .headers
            .keys()
            .map(reqwest::header::HeaderName::as_str)
            .filter(|h| h.starts_with("access-control-"))
            .collect();
        assert!(
            cors.is_empty(),
            "CORS is off by default, yet {} {} answers {cors:?}",
            r.method,
            r.path
        );
        assert!(
            r.body.is_empty() || r.header("content-type").as_deref() == Some("application/json"),
            "JSON answers: {r:?}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn cors_headers_go_to_listed_origins_only() {
    let s = start(&format!(
        "{GENEROUS_LIMIT}\ncors_allowed_origins = [\"https://app.example\"]"
    ))
    .await;
    let post = |origin: &str| {
        s.request(reqwest::Method::POST, "/v1/credentials")
            .header("origin", origin)
            .json(&json!({"user": "u-ivan"}))
    };
    let r = send(post("https://app.example")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example"),
        "a listed origin: {r:?}"
    );
    for other in [
        "https://evil.example",
        "https://app.example.evil",
        "http://app.example",
        "https://app.example:8443",
        "null",
    ] {
        let r = send(post(other)).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "origin {other} is not listed: {r:?}"
        );
    }

    let preflight = |origin: &str| {
        s.raw(reqwest::Method::OPTIONS, "/v1/credentials")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
    };
    let r = send(preflight("https://app.example")).await;
    assert!(r.status.is_success(), "preflight of a listed origin: {r:?}");
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example"),
        "preflight: {r:?}"
    );
    let allowed_headers = r
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization") && allowed_headers.contains("content-type"),
        "the preflight lets a browser send the key and JSON: {r:?}"
    );
    let r = send(preflight("https://evil.example")).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "preflight of another origin: {r:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn health_and_readiness_need_no_key() {
    let s = start(GENEROUS_LIMIT).await;
    let r = s.get_unauthenticated("/healthz").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json(), json!({"status": "ok"}));
    let r = s.get_unauthenticated("/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json(), json!({"status": "ready"}));
    s.stop().await;
}

// --- configuration -------------------------------------------------------------------------------

#[test]
fn plain_http_is_a_config_error_off_loopback() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("secret"), format!("{}\n", common::SECRET))
        .expect("writing the secret");
    for listen in [
        "http://192.0.2.10:8080",
        "http://0.0.0.0:8080",
        "http://[::]:8080",
    ] {
        let toml = relay_toml(&format!("listen = \"{listen}\""), "");
        match Config::parse(&toml, dir.path()) {
            Ok(_) => panic!("[api] listen = {listen:?} is accepted"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("api.listen"), "the error names api.listen: {e}");
            }
        }
    }
    for listen in [
        "http://127.0.0.1:0",
        "http://[::1]:0",
        "https://192.0.2.10:8443",
    ] {
        let toml = relay_toml(&format!("listen = \"{listen}\""), "");
        if let Err(e) = Config::parse(&toml, dir.path()) {
            panic!("[api] listen = {listen:?} is refused: {e}");
        }
    }
}

// --- the evidence endpoints ---------------------------------------------------------------------

/// The evidence endpoints, with a period that holds today.
const EVIDENCE_PATHS: [&str; 3] = [
    "/v1/evidence/report?from=2020-01-01&to=2099-12-31&format=json",
    "/v1/evidence/export?from=2020-01-01&to=2099-12-31",
    "/v1/evidence/status",
];

#[tokio::test]
async fn evidence_endpoints_take_evidence_keys_only_and_credential_endpoints_refuse_them() {
    let ev = tempfile::tempdir().unwrap();
    let s = start_with_evidence(ev.path()).await;
    for path in EVIDENCE_PATHS {
        let r = s.get(path).await;
        r.assert_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            &format!("a credentials key on {path}"),
        );
        let r = s.get_unauthenticated(path).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "missing_api_key", path);
        let r = send(s.raw(reqwest::Method::GET, path).bearer_auth("wrong")).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "invalid_api_key", path);
        let r = send(s.raw(reqwest::Method::GET, path).bearer_auth(EVIDENCE_KEY)).await;
        assert_eq!(r.status, StatusCode::OK, "an evidence key on {path}: {r:?}");
    }
    for path in ["/v1/credentials", "/v1/ice-servers"] {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let r = send(s.raw(method.clone(), path).bearer_auth(EVIDENCE_KEY)).await;
            r.assert_error(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                &format!("an evidence key on {method} {path}"),
            );
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn the_report_comes_as_html_json_and_csv_tables() {
    let ev = tempfile::tempdir().unwrap();
    let s = start_with_evidence(ev.path()).await;
    allocate_de_to_fr(&s).await;
    wait_for_record(ev.path(), "allocation-ended").await;
    let period = "from=2020-01-01&to=2099-12-31";

    let r = s
        .evidence(&format!("/v1/evidence/report?{period}&format=json"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let report = r.json();
    assert_eq!(report["schema"], "eeaturn-report/1");
    assert_eq!(report["summary"]["verified"], true, "{report}");
    assert_eq!(report["summary"]["allocations"], 1, "{report}");
    assert_eq!(report["summary"]["all_inside"], true, "{report}");
    assert_eq!(report["nodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["nodes"][0]["node"], "api-node");
    assert_eq!(report["clients_by_country"][0]["country"], "DE", "{report}");

    let r = s.evidence(&format!("/v1/evidence/report?{period}")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(r.body.starts_with("<!DOCTYPE html>"), "{}", &r.body[..100]);
    assert!(r.body.contains("<html lang=\"en\""), "English by default");
    let de = s
        .evidence(&format!("/v1/evidence/report?{period}&format=html&lang=de"))
        .await;
    assert!(de.body.contains("<html lang=\"de\""), "German on request");
    assert!(
        de.body
            .contains("eeaturn evidence verify --trust api-node.pub --from"),
        "the verify box names the export's layout"
    );

    let r = s
        .evidence(&format!("/v1/evidence/report?{period}&format=csv"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/csv; charset=utf-8")
    );
    assert!(
        r.body.starts_with("key,value\r\n"),
        "the summary table by default: {r:?}"
    );
    let r = s
        .evidence(&format!(
            "/v1/evidence/report?{period}&format=csv&table=nodes"
        ))
        .await;
    assert!(r.body.starts_with("node,"), "{r:?}");
    assert_eq!(r.body.lines().count(), 2, "a header and one node: {r:?}");

    for (query, code) in [
        ("from=2026-12-02&to=2026-12-01", "invalid_period"),
        ("from=2026-13-01&to=2026-12-01", "invalid_period"),
        ("from=1969-12-31&to=2026-12-01", "invalid_period"),
        ("to=2026-12-01", "invalid_request"),
        (
            "from=2026-12-01&to=2026-12-01&format=pdf",
            "invalid_request",
        ),
        ("from=2026-12-01&to=2026-12-01&lang=fr", "invalid_request"),
        (
            "from=2026-12-01&to=2026-12-01&table=nodes",
            "invalid_request",
        ),
        (
            "from=2026-12-01&to=2026-12-01&format=csv&table=x",
            "invalid_request",
        ),
        (
            "from=2026-12-01&to=2026-12-01&from=2026-12-01",
            "invalid_request",
        ),
        ("from=2026-12-01&to=2026-12-01&user=x", "invalid_request"),
    ] {
        let r = s.evidence(&format!("/v1/evidence/report?{query}")).await;
        r.assert_error(StatusCode::BAD_REQUEST, code, query);
    }
    s.stop().await;
}

#[tokio::test]
async fn status_tells_the_chain_head_checkpoint_admission_and_retention() {
    let spec = OpenApi::load();
    let ev = tempfile::tempdir().unwrap();
    let s = start_with_evidence(ev.path()).await;
    allocate_de_to_fr(&s).await;
    // A checkpoint every second: wait for one after the allocation.
    sleep(Duration::from_millis(1500)).await;
    let r = s.evidence("/v1/evidence/status").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let status = r.json();
    let mut errors = Vec::new();
    let schema = spec.response_schema("/v1/evidence/status", "GET", 200);
    spec.check(&schema, &status, "$", &mut errors);
    assert!(errors.is_empty(), "{errors:?}: {status}");
    assert_eq!(status["node"], "api-node");
    assert_eq!(status["site"], "test-site");
    let dev_pub = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/dev-evidence.pub"
    ))
    .unwrap();
    let fingerprint = status["key_fingerprint"].as_str().unwrap();
    assert!(
        dev_pub.contains(&format!("# fingerprint: {fingerprint}")),
        "{status}"
    );
    // node-started, policy-in-force, allocation-created, permission at least.
    let seq = status["head"]["seq"].as_u64().unwrap();
    assert!(seq >= 4, "{status}");
    let last_line = last_record_line(ev.path());
    assert_eq!(
        status["head"]["hash"].as_str().unwrap(),
        eeaturn_evidence::merkle::leaf_hash(last_line.as_bytes()).to_hex(),
        "the head is the hash (SHA-256(0x00 || line)) of the last line written: {status}"
    );
    assert!(status["last_checkpoint"].is_string(), "{status}");
    assert_eq!(status["admission_closed"], false);
    assert_eq!(status["retention"]["configured_s"], 30 * 86_400);
    assert_eq!(status["retention"]["oldest_seq"], 1);
    assert!(status["retention"]["oldest_record"].is_string(), "{status}");
    assert_eq!(status["retention"]["pruned_up_to_seq"], Value::Null);
    s.stop().await;

    // A relay without [evidence] has none to tell.
    let s = start(GENEROUS_LIMIT).await;
    for path in EVIDENCE_PATHS {
        let r = send(s.raw(reqwest::Method::GET, path).bearer_auth(EVIDENCE_KEY)).await;
        r.assert_error(StatusCode::NOT_FOUND, "no_evidence", path);
        let schema = spec.response_schema(path.split('?').next().unwrap(), "GET", 404);
        let mut errors = Vec::new();
        spec.check(&schema, &r.json(), "$", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn an_export_unpacked_passes_evidence_verify_offline() {
    let ev = tempfile::tempdir().unwrap();
    // A first run, stopped: its segment is closed with a manifest.
    let s = start_with_evidence(ev.path()).await;
    allocate_de_to_fr(&s).await;
    s.stop().await;
    sleep(Duration::from_millis(1100)).await;
    let between = eeaturn_evidence::time::Timestamp::from_system_time(wall_now());
    sleep(Duration::from_millis(1100)).await;
    let s = start_with_evidence(ev.path()).await;
    allocate_de_to_fr(&s).await;
    sleep(Duration::from_millis(1500)).await;

    // The whole time: both segments with their records.
    let whole = s.export("from=2020-01-01&to=2099-12-31").await;
    let names = tar_names(&whole);
    assert!(names.contains(&"api-node.pub".to_owned()), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".jsonl")).count(),
        2,
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("/keys/")),
        "day keys stay: {names:?}"
    );
    let out = tempfile::tempdir().unwrap();
    tar::Archive::new(&whole[..]).unpack(out.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.path().join("api-node.pub")).unwrap(),
        eeaturn_evidence::sign::PublicKey::from_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/dev-evidence.pub"
        )))
        .unwrap()
        .to_text(),
        "the public key of the signing key the relay holds"
    );
    verify_offline(out.path(), &["--from", "2020-01-01", "--to", "2099-12-31"]);

    // The second run only: the first segment comes as its manifest alone.
    let from = between.to_string();
    let part = s.export(&format!("from={from}&to=2099-12-31")).await;
    let names = tar_names(&part);
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".jsonl")).count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.ends_with(".manifest.json"))
            .count(),
        1,
        "the first segment's manifest keeps the chain: {names:?}"
    );
    let out = tempfile::tempdir().unwrap();
    tar::Archive::new(&part[..]).unpack(out.path()).unwrap();
    verify_offline(out.path(), &["--from", &from, "--to", "2099-12-31"]);
    s.stop().await;
}

#[tokio::test]
async fn after_a_key_rotation_the_report_and_export_trust_the_previous_public_keys() {
    let ev = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (old_key, old_pub) = (keys.path().join("old.key"), keys.path().join("old.pub"));
    let (der, public) = eeaturn_evidence::sign::keygen().unwrap();
    eeaturn_evidence::sign::write_key_files(&old_key, &old_pub, &der, &public).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let with = |key: &std::path::Path, extra: &str| {
        format!(
            "{}\n[evidence]\nenabled = true\ndirectory = \"{}\"\nsigning_key_file = \"{}\"\n\
             node_id = \"api-node\"\nfsync = \"always\"\ncheckpoint_interval = \"1s\"\n{extra}\n",
            relay_toml("listen = \"https://127.0.0.1:0\"", GENEROUS_LIMIT),
            ev.path().display(),
            key.display()
        )
    };
    // A run signed with the old key, then the rotation to the development key.
    let s = start_toml(with(&old_key, "")).await;
    allocate_de_to_fr(&s).await;
    s.stop().await;
    let dev_key = std::path::Path::new(root).join("config/dev-evidence.key");
    let period = "from=2020-01-01&to=2099-12-31";

    // Without the old public key, the report cannot trust the first run's manifest.
    let s = start_toml(with(&dev_key, "")).await;
    let r = s
        .evidence(&format!("/v1/evidence/report?{period}&format=json"))
        .await;
    assert_eq!(r.json()["summary"]["verified"], false, "{}", r.body);
    s.stop().await;

    let s = start_toml(with(
        &dev_key,
        &format!("previous_public_keys = [\"{}\"]", old_pub.display()),
    ))
    .await;
    allocate_de_to_fr(&s).await;
    wait_for_record(ev.path(), "allocation-ended").await;
    let r = s
        .evidence(&format!("/v1/evidence/report?{period}&format=json"))
        .await;
    let report = r.json();
    assert_eq!(report["summary"]["verified"], true, "{report}");
    let previous = format!(
        "api-node.previous-{}.pub",
        &public.fingerprint().to_hex()[..12]
    );
    let html = s.evidence(&format!("/v1/evidence/report?{period}")).await;
    assert!(
        html.body
            .contains(&format!("--trust api-node.pub --trust {previous}")),
        "the verify box names both keys"
    );

    // The export holds both public keys and verifies offline with both.
    let whole = s.export(period).await;
    let names = tar_names(&whole);
    assert!(names.contains(&previous), "{names:?}");
    let out = tempfile::tempdir().unwrap();
    tar::Archive::new(&whole[..]).unpack(out.path()).unwrap();
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_eeaturn"))
        .current_dir(out.path())
        .args([
            "evidence",
            "verify",
            "api-node",
            "--trust",
            "api-node.pub",
            "--trust",
        ])
        .arg(&previous)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    s.stop().await;
}

#[tokio::test]
async fn a_previous_public_key_that_does_not_parse_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), format!("{}\n", common::SECRET)).unwrap();
    std::fs::write(dir.path().join("old.pub"), "not a key\n").unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let toml = format!(
        "{}\n[evidence]\nenabled = true\nsigning_key_file = \"{root}/config/dev-evidence.key\"\n\
         previous_public_keys = [\"old.pub\"]\n",
        relay_toml("listen = \"https://127.0.0.1:0\"", GENEROUS_LIMIT),
    );
    let err = Config::parse(&toml, dir.path()).unwrap_err().to_string();
    assert!(err.contains("evidence.previous_public_keys"), "{err}");
    assert!(err.contains("old.pub"), "{err}");
}

/// Runs `eeaturn evidence verify api-node --trust api-node.pub ARGS` in `dir`; it must pass.
fn verify_offline(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eeaturn"))
        .current_dir(dir)
        .args(["evidence", "verify", "api-node", "--trust", "api-node.pub"])
        .args(args)
        .output()
        .expect("running eeaturn evidence verify");
    assert!(
        out.status.success(),
        "verify {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("VERIFIED"));
}

/// One allocation of a German client with a permission for a French peer.
async fn allocate_de_to_fr(s: &ApiServer) {
    let r = s.get("/v1/credentials?user=u-ev").await;
    let credential = check_credential(&r.json(), Some("u-ev"), DEFAULT_TTL);
    let peer = spawn_echo_peer("127.0.2.1").await;
    let mut c = TurnClient::bind("127.0.1.1", s.udp, credential).await;
    c.allocate().await.expect("a DE client allocates");
    c.create_permission(&[peer]).await.expect("a FR peer");
    c.refresh(0).await.expect("the allocation ends");
}

/// Waits (up to 10 s) until the evidence in `dir` holds a record of `kind`: the writer thread
/// writes a little after the relay answers, so a test reading the files must wait for it.
async fn wait_for_record(dir: &std::path::Path, kind: &str) {
    let needle = format!("\"kind\":\"{kind}\"");
    for _ in 0..100 {
        let found = std::fs::read_dir(dir.join("segments"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(&needle)));
        if found {
            return;
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("no {kind} record in {} after 10 s", dir.display());
}

/// The last line of the newest records file.
fn last_record_line(dir: &std::path::Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let text = std::fs::read_to_string(files.last().unwrap()).unwrap();
    text.lines().last().unwrap().to_owned()
}

fn tar_names(tar: &[u8]) -> Vec<String> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

// --- docs/api/openapi.yaml -------------------------------------------------------------------

#[test]
fn openapi_describes_exactly_the_served_routes() {
    let spec = OpenApi::load();
    let described = spec.operations();
    let served: BTreeSet<(String, String)> = eeaturn::api::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        described, served,
        "docs/api/openapi.yaml (left) and eeaturn::api::ROUTES (right) differ"
    );
}

#[tokio::test]
async fn real_answers_match_the_openapi_schemas() {
    let spec = OpenApi::load();
    let s = start("rate_limit = 60\nrate_burst = 12").await;
    let body = json!({"user": "u-june", "ttl": 300});
    let mut answers = vec![
        s.post("/v1/credentials", &body).await,
        s.post("/v1/ice-servers", &body).await,
        s.get("/v1/credentials?user=u-june").await,
        s.get("/v1/ice-servers").await,
        s.post("/v1/credentials", &json!({"ttl": 0})).await,
        s.post("/v1/ice-servers", &json!({"extra": 1})).await,
        send(s.raw(reqwest::Method::GET, "/v1/credentials")).await,
        send(
            s.raw(reqwest::Method::POST, "/v1/ice-servers")
                .bearer_auth("wrong")
                .json(&body),
        )
        .await,
        send(
            s.raw(reqwest::Method::POST, "/v1/credentials")
                .bearer_auth(EVIDENCE_KEY)
                .json(&body),
        )
        .await,
        send(
            s.request(reqwest::Method::POST, "/v1/credentials")
                .header("content-type", "application/json")
                .body(padded_body(MAX_BODY + 1)),
        )
        .await,
        send(
            s.request(reqwest::Method::POST, "/v1/ice-servers")
                .header("content-type", "text/plain")
                .body("u"),
        )
        .await,
        s.get_unauthenticated("/healthz").await,
        s.get_unauthenticated("/readyz").await,
        s.get_unauthenticated("/healthz?token=x").await,
        s.get_unauthenticated("/readyz?api_key=x").await,
    ];
    // Use up the bucket (12 burst; some answers above may not count) for a 429.
    for _ in 0..20 {
        let r = s.get("/v1/credentials").await;
        let limited = r.status == StatusCode::TOO_MANY_REQUESTS;
        answers.push(r);
        if limited {
            break;
        }
    }
    let statuses: BTreeSet<u16> = answers.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses,
        BTreeSet::from([200, 400, 401, 403, 413, 415, 429]),
        "the answers cover these statuses"
    );
    for r in &answers {
        let path = r.path.split('?').next().unwrap_or_default();
        let schema = spec.response_schema(path, r.method.as_str(), r.status.as_u16());
        let mut errors = Vec::new();
        spec.check(&schema, &r.json(), "$", &mut errors);
        assert!(
            errors.is_empty(),
            "{} {} → {}: the body does not match docs/api/openapi.yaml: {errors:?}\n{}",
            r.method,
            r.path,
            r.status,
            r.body
        );
    }
    s.stop().await;
}

// --- helpers: the relay with its API ------------------------------------------------------------

/// Headers every answer carries. See docs/api.md, "Abuse limits and headers".
const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("strict-transport-security", "max-age=31536000"),
];

/// Returns a config with UDP, TCP and TLS listeners on 127.0.0.1 (port 0), the development
/// certificate, the loopback test world, and an `[api]` table made of `api_listen` (a
/// `listen = ...` line), the test URIs, TTLs and keys, and `api_extra`.
fn relay_toml(api_listen: &str, api_extra: &str) -> String {
    let signaling = sha256_hex(SIGNALING_KEY);
    let evidence = sha256_hex(EVIDENCE_KEY);
    let uris = URIS.map(|u| format!("\"{u}\"")).join(", ");
    let tls = common::dev_tls_table();
    common::config_toml_listening(
        r#""udp://127.0.0.1:0", "tcp://127.0.0.1:0", "tls://127.0.0.1:0""#,
        RELAY_PORT_MIN..=RELAY_PORT_MAX,
        &format!(
            r#"{tls}
[api]
{api_listen}
uris = [{uris}]
default_ttl = "{DEFAULT_TTL}s"
max_ttl = "{MAX_TTL}s"
{api_extra}

[[api.keys]]
name = "{SIGNALING_NAME}"
scope = "credentials"
sha256 = "{signaling}"

[[api.keys]]
name = "auditor"
scope = "evidence"
sha256 = "{evidence}"
"#
        ),
    )
}

/// A relay with its API running in this process.
struct ApiServer {
    /// The API listener.
    api: SocketAddr,
    /// The UDP, TCP and TLS TURN listeners.
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: SocketAddr,
    http: reqwest::Client,
    running: Running,
    _dir: TempDir,
}

/// Starts a relay on [`relay_toml`] with `api_extra` in its `[api]` table, the API on
/// `https://127.0.0.1:0`.
async fn start(api_extra: &str) -> ApiServer {
    start_toml(relay_toml("listen = \"https://127.0.0.1:0\"", api_extra)).await
}

/// Starts a relay as [`start`] does, keeping its evidence in `evidence` (node `api-node`,
/// the development signing key, a checkpoint every second).
async fn start_with_evidence(evidence: &std::path::Path) -> ApiServer {
    let root = env!("CARGO_MANIFEST_DIR");
    let toml = format!(
        "{}\n[evidence]\nenabled = true\ndirectory = \"{}\"\nsigning_key_file = \"{root}/config/dev-evidence.key\"\nnode_id = \"api-node\"\nsite = \"test-site\"\nfsync = \"always\"\ncheckpoint_interval = \"1s\"\nretention = \"30d\"\n",
        relay_toml("listen = \"https://127.0.0.1:0\"", GENEROUS_LIMIT),
        evidence.display()
    );
    start_toml(toml).await
}

async fn start_toml(toml: String) -> ApiServer {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    std::fs::write(dir.path().join("secret"), format!("{}\n", common::SECRET))
        .expect("writing the secret");
    let config = match Config::parse(&toml, dir.path()) {
        Ok(c) => c,
        Err(e) => panic!("the test config is valid: {e}\n{toml}"),
    };
    let running = match eeaturn::shell::start(config).await {
        Ok(r) => r,
        Err(e) => panic!("the relay starts: {e:#}"),
    };
    let api = running.api_addr.expect("the API listens when [api] is set");
    assert_ne!(api.port(), 0, "api_addr reports the OS-chosen port");
    assert_eq!(running.local_addrs.len(), 3, "{:?}", running.local_addrs);
    let (udp, tcp, tls) = (
        running.local_addrs[0],
        running.local_addrs[1],
        running.local_addrs[2],
    );
    ApiServer {
        api,
        udp,
        tcp,
        tls,
        http: http_client(),
        running,
        _dir: dir,
    }
}

impl ApiServer {
    /// A request to `path` (with its query) without any credential.
    fn raw(&self, method: reqwest::Method, path: &str) -> Request {
        let url = format!("https://localhost:{}{path}", self.api.port());
        Request {
            method: method.clone(),
            path: path.to_owned(),
            builder: self.http.request(method, url),
        }
    }

    /// A request to `path` with the signaling key.
    fn request(&self, method: reqwest::Method, path: &str) -> Request {
        self.raw(method, path).bearer_auth(SIGNALING_KEY)
    }

    /// POSTs `body` as JSON with the signaling key.
    async fn post(&self, path: &str, body: &Value) -> Reply {
        send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// GETs `path` with the signaling key.
    async fn get(&self, path: &str) -> Reply {
        send(self.request(reqwest::Method::GET, path)).await
    }

    /// GETs `path` with the evidence key.
    async fn evidence(&self, path: &str) -> Reply {
        send(
            self.raw(reqwest::Method::GET, path)
                .bearer_auth(EVIDENCE_KEY),
        )
        .await
    }

    /// The body of `/v1/evidence/export?QUERY` (the test fails unless it is a tar).
    async fn export(&self, query: &str) -> Vec<u8> {
        let url = format!(
            "https://localhost:{}/v1/evidence/export?{query}",
            self.api.port()
        );
        let r = self
            .http
            .get(url)
            .bearer_auth(EVIDENCE_KEY)
            .send()
            .await
            .expect("the export answers");
        assert_eq!(r.status(), StatusCode::OK, "{r:?}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/x-tar")
        );
        r.bytes().await.expect("the whole export").to_vec()
    }

    /// GETs `path` without a key.
    async fn get_unauthenticated(&self, path: &str) -> Reply {
        send(self.raw(reqwest::Method::GET, path)).await
    }

    async fn stop(self) {
        timeout(TIMEOUT, self.running.stop())
            .await
            .expect("the relay stops in time")
            .expect("the relay stops without error");
    }
}

/// A request being built, remembering what it is for the messages.
struct Request {
    method: reqwest::Method,
    path: String,
    builder: RequestBuilder,
}

impl Request {
    fn map(self, f: impl FnOnce(RequestBuilder) -> RequestBuilder) -> Self {
        Self {
            builder: f(self.builder),
            ..self
        }
    }

    fn bearer_auth(self, key: &str) -> Self {
        self.map(|b| b.bearer_auth(key))
    }

    fn basic_auth(self, user: &str, password: Option<&str>) -> Self {
        self.map(|b| b.basic_auth(user, password))
    }

    fn header(self, name: &str, value: &str) -> Self {
        self.map(|b| b.header(name, value))
    }

    fn json(self, body: &Value) -> Self {
        self.map(|b| b.json(body))
    }

    fn body(self, body: impl Into<reqwest::Body>) -> Self {
        self.map(|b| b.body(body))
    }
}

/// An answer, read whole.
struct Reply {
    method: reqwest::Method,
    path: String,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} → {} {:?} {}",
            self.method, self.path, self.status, self.headers, self.body
        )
    }
}

impl Reply {
    /// The body as JSON (the test fails if it is not).
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {self:?}"))
    }

    /// The header `name` as text.
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("an ASCII header value").to_owned())
    }

    /// The `error` code of an error answer ("" if there is none).
    fn error_code(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// Checks an error answer: status, `{"error": code, "message": ...}` and nothing else (no
    /// credential, no key), `WWW-Authenticate: Bearer` on 401.
    fn assert_error(&self, status: StatusCode, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {self:?}");
        let body = self.json();
        assert_eq!(body["error"], json!(code), "{what}: {self:?}");
        assert_eq!(
            object_keys(&body),
            BTreeSet::from(["error", "message"]),
            "{what}: an error is error and message only: {self:?}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: a human message: {self:?}"
        );
        for secret in [SIGNALING_KEY, EVIDENCE_KEY, common::SECRET] {
            assert!(
                !self.body.contains(secret),
                "{what}: the answer holds a secret: {self:?}"
            );
        }
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json"),
            "{what}: {self:?}"
        );
        if status == StatusCode::UNAUTHORIZED {
            let challenge = self.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer"),
                "{what}: a 401 carries WWW-Authenticate: Bearer: {self:?}"
            );
        }
    }
}

/// Sends `request` and reads the whole answer.
async fn send(request: Request) -> Reply {
    let Request {
        method,
        path,
        builder,
    } = request;
    let response = builder
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
    Reply {
        method,
        path,
        status,
        headers,
        body,
    }
}

/// An HTTPS client trusting only the development certificate.
fn http_client() -> reqwest::Client {
    let pem = std::fs::read(dev_cert_path()).expect("reading config/dev-cert.pem");
    let cert = reqwest::Certificate::from_pem(&pem).expect("a PEM certificate");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building the HTTPS client")
}

fn dev_cert_path() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev-cert.pem")
}

/// `{"user":"u-pad"}` followed by spaces up to `len` bytes.
fn padded_body(len: usize) -> String {
    let mut body = r#"{"user":"u-pad"}"#.to_owned();
    body.extend(std::iter::repeat_n(' ', len - body.len()));
    body
}

/// The keys of a JSON object (empty for anything else).
fn object_keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// Lowercase hex SHA-256 of `key` (what `[[api.keys]] sha256` holds).
fn sha256_hex(key: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()))
}

/// `base64(HMAC-SHA1(secret, username))`, the TURN REST password, computed here.
fn rest_password(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    BASE64.encode(ring::hmac::sign(&key, username.as_bytes()).as_ref())
}

/// Checks a credential answer (`username`, `password`, `ttl`): the username is
/// `<expiry>:signaling[/<user>]` with the expiry `ttl` seconds from now, the password is signed
/// with the test secret. Returns it for a TURN client.
fn check_credential(body: &Value, user: Option<&str>, ttl: u64) -> Credential {
    let username = body["username"]
        .as_str()
        .unwrap_or_else(|| panic!("a string username: {body}"));
    let password = body["password"]
        .as_str()
        .unwrap_or_else(|| panic!("a string password: {body}"));
    assert_eq!(body["ttl"], json!(ttl), "ttl: {body}");
    let (expiry, rest) = username
        .split_once(':')
        .unwrap_or_else(|| panic!("username {username:?} is <expiry>:<key name>[/<user>]"));
    let expected_rest = match user {
        Some(u) => format!("{SIGNALING_NAME}/{u}"),
        None => SIGNALING_NAME.to_owned(),
    };
    assert_eq!(rest, expected_rest, "username {username:?}");
    let expiry: u64 = expiry
        .parse()
        .unwrap_or_else(|_| panic!("username {username:?} starts with a Unix time"));
    let now = wall_now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(
        expiry >= now + ttl - 5 && expiry <= now + ttl + 1,
        "expiry {expiry} is ttl {ttl} s from now ({now})"
    );
    assert_eq!(
        password,
        rest_password(common::SECRET, username),
        "the password is base64(HMAC-SHA1(secret, username))"
    );
    Credential {
        username: username.to_owned(),
        password: password.to_owned(),
        ttl,
    }
}

fn in_relay_range(addr: SocketAddr) -> bool {
    (RELAY_PORT_MIN..=RELAY_PORT_MAX).contains(&addr.port())
}

fn transport(tls: bool) -> &'static str {
    if tls { "TLS" } else { "TCP" }
}

// --- helpers: TURN over TCP and TLS ------------------------------------------------------------

/// A TCP or TLS connection.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A TLS client trusting only the development certificate.
fn tls_connector() -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dev_cert_path()).expect("reading the dev cert") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable trust anchor");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Reads an HTTP answer off `io` until it holds `word` after the head, or the server closes,
/// or 6 s pass; returns what arrived.
async fn read_answer(io: &mut (impl AsyncRead + Unpin), word: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer);
        if text
            .split_once("\r\n\r\n")
            .is_some_and(|(_, body)| body.contains(word))
        {
            return text.into_owned();
        }
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            _ => return text.into_owned(),
        }
    }
}

/// Reads one HTTP/1.1 answer (head and a `content-length` body) off `io`; returns its head and
/// body, or why there is none.
async fn read_response(io: &mut (impl AsyncRead + Unpin)) -> Result<(String, String), String> {
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut want = None;
    loop {
        if want.is_none()
            && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            want = Some((end + 4, len));
        }
        if let Some((start, len)) = want
            && buf.len() >= start + len
        {
            let head = String::from_utf8_lossy(&buf[..start - 4]).into_owned();
            let body = String::from_utf8_lossy(&buf[start..start + len]).into_owned();
            return Ok((head, body));
        }
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Err(_) => return Err(format!("no complete answer in {TIMEOUT:?}")),
            Ok(Ok(0)) => return Err(format!("end of stream after {} bytes", buf.len())),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(format!("{e} after {} bytes", buf.len())),
        }
    }
}

/// A TLS connection to `server` (as "localhost").
async fn tls_to(server: SocketAddr) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tcp_from("127.0.0.1", server).await;
    let name = ServerName::try_from("localhost").expect("a valid server name");
    timeout(TIMEOUT, tls_connector().connect(name, tcp))
        .await
        .expect("the TLS handshake completes in time")
        .expect("the TLS handshake succeeds")
}

/// A TCP connection from `from_ip` (port 0) to `server`.
async fn tcp_from(from_ip: &str, server: SocketAddr) -> tokio::net::TcpStream {
    let ip: IpAddr = from_ip.parse().expect("a literal IP");
    let sock = TcpSocket::new_v4().expect("a TCP socket");
    sock.bind(SocketAddr::new(ip, 0))
        .expect("binding the client");
    timeout(TIMEOUT, sock.connect(server))
        .await
        .expect("TCP connect in time")
        .unwrap_or_else(|e| panic!("TCP connect to {server}: {e}"))
}

/// Connects from `from_ip` over TCP or TLS and allocates a UDP relay with `credential`
/// (answering the 401 challenge with the MD5 long-term key); returns the relayed address.
async fn stream_allocate(
    tls: bool,
    server: SocketAddr,
    from_ip: &str,
    credential: &Credential,
) -> Result<SocketAddr, StunError> {
    let tcp = tcp_from(from_ip, server).await;
    let mut io: Box<dyn Io> = if tls {
        let name = ServerName::try_from("localhost").expect("a valid server name");
        Box::new(
            timeout(TIMEOUT, tls_connector().connect(name, tcp))
                .await
                .expect("the TLS handshake completes in time")
                .expect("the TLS handshake succeeds"),
        )
    } else {
        Box::new(tcp)
    };
    let challenge = stream_transact(&mut *io, |_| {}).await;
    assert_eq!(
        challenge.error().map(|e| e.code),
        Some(401),
        "an unsigned Allocate is challenged"
    );
    let realm = String::from_utf8(challenge.attr(attr::REALM).expect("REALM")).expect("UTF-8");
    let nonce = String::from_utf8(challenge.attr(attr::NONCE).expect("NONCE")).expect("UTF-8");
    let key = long_term_key_md5(&credential.username, &realm, &credential.password);
    let r = stream_transact(&mut *io, |b| {
        b.add_raw(attr::USERNAME, credential.username.as_bytes());
        b.add_raw(attr::REALM, realm.as_bytes());
        b.add_raw(attr::NONCE, nonce.as_bytes());
        b.add_message_integrity(&key);
    })
    .await
    .into_result()?;
    assert!(r.message().verify_integrity(&key), "the success verifies");
    let relayed = r.xor_addresses(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 1, "one XOR-RELAYED-ADDRESS");
    Ok(relayed[0])
}

/// Sends an Allocate (REQUESTED-TRANSPORT UDP, then what `sign` adds, then FINGERPRINT) and
/// reads its response off the stream.
async fn stream_transact(io: &mut dyn Io, sign: impl FnOnce(&mut MessageBuilder)) -> Response {
    let tid = next_tid();
    let mut b = MessageBuilder::new(MessageType::new(Method::ALLOCATE, Class::Request), tid);
    b.add_raw(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
    sign(&mut b);
    b.add_fingerprint();
    timeout(TIMEOUT, async {
        io.write_all(&b.finish()).await?;
        io.flush().await
    })
    .await
    .expect("the write completes in time")
    .expect("writing the request");
    let mut bytes = vec![0u8; 20];
    timeout(TIMEOUT, io.read_exact(&mut bytes))
        .await
        .expect("a response header in time")
        .expect("reading a response header");
    let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    bytes.resize(20 + len, 0);
    timeout(TIMEOUT, io.read_exact(&mut bytes[20..]))
        .await
        .expect("the response body in time")
        .expect("reading the response");
    let r = Response { bytes };
    assert_eq!(
        r.message().transaction_id(),
        tid,
        "the response to the request"
    );
    r
}

/// Returns a transaction id unique within this process.
fn next_tid() -> TransactionId {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let mut t = [0u8; 12];
    t[..4].copy_from_slice(b"apit");
    t[4..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    TransactionId(t)
}

// --- helpers: the OpenAPI description ------------------------------------------------------

/// docs/api/openapi.yaml, parsed.
struct OpenApi(Value);

impl OpenApi {
    fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("reading docs/api/openapi.yaml");
        Self(serde_yaml_ng::from_str(&text).expect("docs/api/openapi.yaml is YAML"))
    }

    /// Every (METHOD, path) the description has.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let paths = self.0["paths"].as_object().expect("a paths object");
        let methods = [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ];
        paths
            .iter()
            .flat_map(|(path, item)| {
                methods
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .map(|m| (m.to_ascii_uppercase(), path.clone()))
            })
            .collect()
    }

    /// Follows a local `$ref`.
    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("a local $ref: {r}"));
                self.resolve(
                    self.0
                        .pointer(pointer)
                        .unwrap_or_else(|| panic!("$ref {r} resolves")),
                )
            }
            None => v,
        }
    }

    /// The JSON schema of the answer `status` to `method path`.
    fn response_schema(&self, path: &str, method: &str, status: u16) -> Value {
        let operation = &self.0["paths"][path][method.to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "docs/api/openapi.yaml has no {method} {path}"
        );
        let response = self.resolve(&operation["responses"][status.to_string()]);
        assert!(
            response.is_object(),
            "docs/api/openapi.yaml does not document status {status} of {method} {path}"
        );
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "status {status} of {method} {path} has no application/json schema"
        );
        schema.clone()
    }

    /// Checks `value` against `schema` (types, required, additionalProperties: false, enum,
    /// string lengths, integer bounds, booleans, nullable, array items, allOf), collecting the
    /// mismatches.
    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.check(s, value, at, errors);
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => self.check_object(schema, value, at, errors),
            Some("array") => {
                let Some(items) = value.as_array() else {
                    errors.push(format!("{at}: {value} is not an array"));
                    return;
                };
                let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
                if (items.len() as u64) < min {
                    errors.push(format!("{at}: fewer than {min} items"));
                }
                for (i, item) in items.iter().enumerate() {
                    self.check(&schema["items"], item, &format!("{at}[{i}]"), errors);
                }
            }
            Some("string") => {
                let Some(s) = value.as_str() else {
                    errors.push(format!("{at}: {value} is not a string"));
                    return;
                };
                let len = s.chars().count() as u64;
                let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
                let max = schema.get("maxLength").and_then(Value::as_u64);
                if len < min || max.is_some_and(|m| len > m) {
                    errors.push(format!("{at}: length {len} out of bounds"));
                }
            }
            Some("integer") => {
                let Some(n) = value.as_i64() else {
                    errors.push(format!("{at}: {value} is not an integer"));
                    return;
                };
                let min = schema.get("minimum").and_then(Value::as_i64);
                let max = schema.get("maximum").and_then(Value::as_i64);
                if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                    errors.push(format!("{at}: {n} out of bounds"));
                }
            }
            Some("boolean") if !value.is_boolean() => {
                errors.push(format!("{at}: {value} is not a boolean"));
            }
            Some("boolean") => {}
            Some(other) => errors.push(format!("{at}: the checker does not know type {other}")),
            None if schema.get("properties").is_some() => {
                self.check_object(schema, value, at, errors);
            }
            None => {}
        }
    }

    fn check_object(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(object) = value.as_object() else {
            errors.push(format!("{at}: {value} is not an object"));
            return;
        };
        let empty = serde_json::Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().expect("required names are strings");
            if !object.contains_key(name) {
                errors.push(format!("{at}: the required {name:?} is missing"));
            }
        }
        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            for key in object.keys() {
                if !properties.contains_key(key) {
                    errors.push(format!("{at}: {key:?} is not in the schema's properties"));
                }
            }
        }
        for (key, v) in object {
            if let Some(s) = properties.get(key) {
                self.check(s, v, &format!("{at}.{key}"), errors);
            }
        }
    }
}
