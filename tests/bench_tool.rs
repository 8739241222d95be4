//! The load tool (`src/bin/eeaturn-bench`) against a relay running in this process: every
//! subcommand runs end to end and reports what it measured, so the benchmark cannot rot
//! unnoticed between the (long, manual) comparison runs. Small and slow on purpose: these
//! check that traffic flows and is counted, not how fast.

mod common;

use std::process::Output;

use serde_json::Value;

/// Relay ports of this test's server, out of the way of every other test's.
const RELAY_PORTS: &str = "26800-26899";
/// The tool's peer socket (127.0.2.1, French in the test world).
const PEER_PORT: &str = "26950";

/// Runs the tool with `args` and returns its JSON line.
async fn run_tool(args: &[&str]) -> Value {
    let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    // Off the runtime: the relay under test runs on it.
    let out: Output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_eeaturn-bench"))
            .args(&owned)
            .arg("--json")
            .output()
    })
    .await
    .expect("the blocking task")
    .expect("running eeaturn-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "eeaturn-bench {args:?} failed: {stderr}"
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("eeaturn-bench {args:?}: not one JSON line ({e}): {stderr}"))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_measures_both_directions_setup_and_memory() {
    // The tool opens many allocations from one address, each with its own 401 round trip: the
    // budget of unauthenticated answers per source would drop some (as it should against a
    // flood), so it is off here, as in benches/compare.sh.
    let server = common::start_server_with_workers(
        1,
        Some(RELAY_PORTS),
        "[limits]\nunauthenticated_rate = 0\nunauthenticated_burst = 0\n",
    )
    .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{}\n", common::SECRET)).expect("writing the secret");
    let secret = secret.to_str().expect("a UTF-8 path");
    let addr = server.v4.to_string();
    let pid = std::process::id().to_string();
    let target = [
        "--server",
        addr.as_str(),
        "--secret-file",
        secret,
        "--server-pid",
        pid.as_str(),
    ];

    for direction in ["to-peer", "to-client"] {
        for mode in ["channel", "send"] {
            let mut args = vec!["load"];
            args.extend(target);
            args.extend([
                "--allocations",
                "3",
                "--mode",
                mode,
                "--direction",
                direction,
                "--payload",
                "100",
                "--rate",
                "3000",
                "--duration",
                "1",
                "--warmup",
                "0.2",
                "--peer-port",
                PEER_PORT,
            ]);
            let r = run_tool(&args).await;
            let what = format!("{direction} {mode}: {r}");
            assert_eq!(r["direction"], direction, "{what}");
            let (offered, delivered) = (num(&r, "offered"), num(&r, "delivered"));
            // 3,000 msg/s for 1 s: about 3,000 offered. On loopback nothing should be lost;
            // half leaves room for a machine busy with other tests.
            assert!(offered > 1000.0, "{what}");
            assert!(delivered <= offered && delivered > offered / 2.0, "{what}");
            assert!(num(&r, "lat_p50_us") > 0.0, "{what}");
            assert!(r["server_cpu_s"].is_number(), "{what}");
            assert_eq!(num(&r, "peer_socket_drops"), 0.0, "{what}");
        }
    }

    let mut args = vec!["setup"];
    args.extend(target);
    args.extend(["--allocations", "50"]);
    let r = run_tool(&args).await;
    assert_eq!((num(&r, "ok"), num(&r, "failed")), (50.0, 0.0), "{r}");
    assert!(num(&r, "allocs_per_s") > 0.0, "{r}");

    let mut args = vec!["memory"];
    args.extend(target);
    args.extend(["--allocations", "50", "--peer-port", PEER_PORT]);
    let r = run_tool(&args).await;
    assert_eq!(num(&r, "ok"), 50.0, "{r}");
    assert!(num(&r, "rss_loaded_kib") > 0.0, "{r}");

    server.stop().await;
}
