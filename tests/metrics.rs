//! The Prometheus listener of a running relay: every sample has HELP and TYPE, the key series
//! exist, a relayed allocation shows up in them, and nothing personal is in the labels.

mod common;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use common::start_server;

async fn get(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the metrics listener");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.read_to_string(&mut out),
    )
    .await
    .expect("an answer within 5 s")
    .expect("read");
    out
}

/// Scrapes until the text holds `until` (the workers publish their counters twice a second and
/// the text is rendered once a second), for at most 5 s; returns the last text.
async fn scrape(addr: SocketAddr, until: &str) -> String {
    let mut body = String::new();
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let answer = get(addr, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        body = answer.split("\r\n\r\n").nth(1).expect("a body").to_owned();
        if body.contains(until) {
            break;
        }
    }
    body
}

#[tokio::test]
async fn metrics_have_help_and_show_relaying_and_denials() {
    let server = start_server("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let addr = server.metrics_addr().expect("metrics are configured");

    let mut client = server.client("127.0.1.7", "metrics-user").await;
    let alloc = client.allocate().await.expect("Allocate succeeds");
    let _ = alloc;
    let denied = client
        .create_permission(&["127.0.6.1:9".parse().expect("literal")])
        .await;
    assert!(denied.is_err(), "a British peer is refused");

    let body = scrape(
        addr,
        "eeaturn_policy_denials_total{subject=\"peer\",rule=\"outside-region\"} 1",
    )
    .await;
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().expect("a name");
        assert!(name.starts_with("eeaturn_"), "{line}");
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    for needle in [
        "eeaturn_build_info{version=",
        "eeaturn_allocations 1",
        "eeaturn_allocations_created_total 1",
        "eeaturn_requests_total{method=\"allocate\",result=\"ok\"} 1",
        "eeaturn_policy_denials_total{subject=\"peer\",rule=\"outside-region\"} 1",
        "eeaturn_geo_db_stale{db=\"country\"} 0",
        "eeaturn_geo_db_stale{db=\"asn\"} 0",
        "eeaturn_geo_db_build_timestamp_seconds{db=\"country\"} 1795000000",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in\n{body}");
    }
    assert!(!body.contains("127.0."), "no address in the metrics");
    assert!(!body.contains("metrics-user"), "no user in the metrics");
}

#[tokio::test]
async fn only_get_metrics_is_served() {
    let server = start_server("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let addr = server.metrics_addr().expect("metrics are configured");
    assert!(
        get(addr, "GET / HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404")
    );
    assert!(
        get(addr, "POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405")
    );
    let long = format!("GET /metrics HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(5000));
    assert!(get(addr, &long).await.starts_with("HTTP/1.1 431"));
}

#[tokio::test]
async fn silent_connections_do_not_keep_a_scrape_out() {
    let server = start_server("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let addr = server.metrics_addr().expect("metrics are configured");
    // More connections than the listener serves at once, none of which sends a request.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let answer = get(addr, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    // The server closed the silent ones (header-read timeout).
    for mut s in silent {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "a silent connection is closed by the server"
        );
    }
}
