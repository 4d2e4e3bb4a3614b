//! Smoke test of the load generator: `corestream bench run` for ~2 s against
//! a broker started by the harness, checking that it measured throughput and
//! latencies (and the broker's CPU), and that bad input is a one-line error.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, BIN};

/// Runs `corestream` with `args`, killing it after `timeout`.
fn run_bounded(args: &[&str], timeout: Duration) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn corestream bench");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "corestream {args:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.success(),
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

fn latency_ok(v: &serde_json::Value, what: &str) {
    assert!(v.is_object(), "{what}: no latency recorded: {v}");
    let get = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{what}.{k} missing in {v}"));
    assert!(get("count") > 0, "{what}: count is 0");
    assert!(get("p50_us") <= get("p99_us"), "{what}: p50 > p99: {v}");
    assert!(get("p99_us") <= get("p999_us"), "{what}: p99 > p99.9: {v}");
    assert!(get("p999_us") <= get("max_us"), "{what}: p99.9 > max: {v}");
}

#[test]
fn bench_run_measures_throughput_and_latency() {
    let mut broker = Broker::start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let pid = broker.pid().unwrap().to_string();
    let addr = broker.addr();
    let (ok, stdout, stderr) = run_bounded(
        &[
            "bench", "run", "-b", &addr, "--message-size", "512", "--partitions", "4", "--producers", "2",
            "--consumers", "2", "--rate", "4000", "--acks", "all", "--keys", "skewed", "--linger-ms", "1",
            "--duration", "2", "--warmup", "0.5", "--broker-pid", &pid, "--broker-name", "corestream",
            "--json", json.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(ok, "bench run failed\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}", broker.log_tail());
    broker.assert_alive();
    assert!(stdout.contains("produce:") && stdout.contains("end-to-end"), "{stdout}");

    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = v["results"].as_array().and_then(|a| a.last()).expect("results").clone();
    assert_eq!(r["broker"], "corestream");
    assert!(r["produce"]["msg_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["produce"]["mb_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["consume"]["msg_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["produce_errors"].as_u64(), Some(0), "{r}");
    latency_ok(&r["ack_latency"], "ack_latency");
    latency_ok(&r["e2e_latency"], "e2e_latency");
    // The rate was respected (4000 msg/s over 2 s, with slack for noise).
    let acked = r["produce"]["messages"].as_u64().unwrap();
    assert!((4000..=12_000).contains(&acked), "acked {acked} in the window: {r}");
    let cpu = &r["broker_cpu"];
    assert_eq!(cpu["pid"].as_u64(), Some(broker.pid().unwrap() as u64), "{r}");
    assert!(cpu["cpu_seconds"].as_f64().unwrap() >= 0.0);
    broker.terminate();
}

#[test]
fn bench_bad_input_is_a_one_line_error() {
    for args in [
        &["bench", "run", "--workload", "nope"][..],
        &["bench", "run", "--acks", "7"][..],
        &["bench", "run", "--rate", "fast"][..],
        &["bench", "compare", "--workload", "max-throughput-acks1,bogus"][..],
    ] {
        let (ok, _, stderr) = run_bounded(args, Duration::from_secs(20));
        assert!(!ok, "{args:?} succeeded");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {stderr}");
    }
}
