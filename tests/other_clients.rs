//! Other clients against the broker: kcat, kafka-python, and corestream's
//! own CLI. kcat and kafka-python are installed by tests/run.sh; when they
//! are missing these tests fail and say so (they are never skipped).

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const INSTALL_HINT: &str = "run the README's test command `tests/run.sh` (it installs kcat and kafka-python), \
                            or install them yourself (apt-get install kcat; pip install kafka-python) \
                            and point CORESTREAM_KCAT / CORESTREAM_PYTHON at them";

struct Out {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with `stdin`, killing it after `timeout`.
fn run(mut cmd: Command, stdin: &[u8], timeout: Duration) -> Out {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let mut sin = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let ro = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = so.read_to_end(&mut s);
        s
    });
    let re = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&ro.join().unwrap()).into_owned();
            let stderr = String::from_utf8_lossy(&re.join().unwrap()).into_owned();
            panic!("{desc} did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Out {
        status,
        stdout: String::from_utf8_lossy(&ro.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&re.join().unwrap()).into_owned(),
    }
}

fn check(out: &Out, what: &str) {
    assert!(out.status.success(), "{what} failed with {}\nstdout:\n{}\nstderr:\n{}", out.status, out.stdout, out.stderr);
}

fn kcat() -> PathBuf {
    if let Some(p) = std::env::var_os("CORESTREAM_KCAT") {
        return PathBuf::from(p);
    }
    for name in ["kcat", "kafkacat"] {
        if let Ok(o) = Command::new(name).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
            let _ = o;
            return PathBuf::from(name);
        }
    }
    panic!("kcat is not installed: {INSTALL_HINT}");
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CORESTREAM_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

#[test]
fn kcat_produce_consume_and_list() {
    let kcat = kcat();
    let broker = Broker::start(2, &[]);
    let addr = broker.addr();
    let topic = unique("kcat");
    create_topic(&addr, &topic, 2, &[]);

    // Partition 0: uncompressed, keyed with "key:value" lines.
    let lines: String = (0..20).map(|i| format!("k{i}:value number {i}\n")).collect();
    let mut c = Command::new(&kcat);
    c.args(["-b", &addr, "-P", "-t", &topic, "-p", "0", "-K", ":"]);
    check(&run(c, lines.as_bytes(), Duration::from_secs(60)), "kcat -P");
    // Partition 1: zstd-compressed, no keys.
    let lines: String = (0..10).map(|i| format!("zstd line {i}\n")).collect();
    let mut c = Command::new(&kcat);
    c.args(["-b", &addr, "-P", "-t", &topic, "-p", "1", "-z", "zstd"]);
    check(&run(c, lines.as_bytes(), Duration::from_secs(60)), "kcat -P -z zstd");

    let mut c = Command::new(&kcat);
    c.args(["-C", "-b", &addr, "-t", &topic, "-o", "beginning", "-e", "-f", "%p:%o:%k:%s\n"]);
    let out = run(c, b"", Duration::from_secs(60));
    check(&out, "kcat -C");
    let mut got: Vec<String> = out.stdout.lines().filter(|l| !l.is_empty()).map(String::from).collect();
    got.sort();
    let mut want: Vec<String> = (0..20)
        .map(|i| format!("0:{i}:k{i}:value number {i}"))
        .chain((0..10).map(|i| format!("1:{i}::zstd line {i}")))
        .collect();
    want.sort();
    assert_eq!(got, want, "kcat -C output");

    // Cross-check with librdkafka: keys are real keys, not part of the value.
    let recs = consume_all(&addr, &topic, &[0, 1], Duration::from_secs(30));
    let r5 = recs.iter().find(|r| r.partition == 0 && r.offset == 5).unwrap();
    assert_eq!((r5.key.as_deref(), r5.value.as_deref()), (Some(&b"k5"[..]), Some(&b"value number 5"[..])));
    let z3 = recs.iter().find(|r| r.partition == 1 && r.offset == 3).unwrap();
    assert_eq!((z3.key.as_deref(), z3.value.as_deref()), (None, Some(&b"zstd line 3"[..])));

    let mut c = Command::new(&kcat);
    c.args(["-L", "-b", &addr]);
    let out = run(c, b"", Duration::from_secs(60));
    check(&out, "kcat -L");
    assert!(out.stdout.contains(&format!("topic \"{topic}\" with 2 partitions")), "kcat -L output:\n{}", out.stdout);
    assert!(out.stdout.contains(&format!("at {addr}")), "kcat -L must list the advertised address {addr}:\n{}", out.stdout);
    assert!(out.stdout.contains(" 1 brokers:"), "kcat -L output:\n{}", out.stdout);
}

#[test]
fn kafka_python_produce_consume_admin() {
    let py = python();
    let probe = Command::new(&py).args(["-c", "import kafka; print(kafka.__version__)"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "kafka-python is not importable by {}: {}\n{INSTALL_HINT}",
            py.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run {}: {e}\n{INSTALL_HINT}", py.display()),
    }
    let broker = Broker::start(2, &[]);
    let addr = broker.addr();
    let topic = unique("kpy");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/kafka_python_check.py");
    let mut c = Command::new(&py);
    c.arg(&script).arg(&addr).arg(&topic);
    let out = run(c, b"", Duration::from_secs(180));
    check(&out, "kafka_python_check.py");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("script output is not JSON ({e}):\n{}\nstderr:\n{}", out.stdout, out.stderr));

    assert_eq!(partition_count(&addr, &topic), Some(3), "topic created by KafkaAdminClient");

    let produced = v["produced"].as_array().expect("produced");
    let consumed = v["consumed"].as_array().expect("consumed");
    assert_eq!(produced.len(), 30);
    assert_eq!(consumed.len(), 30, "consumed: {consumed:?}");
    for p in produced {
        let i: usize = p["key"].as_str().unwrap().trim_start_matches("key-").parse().unwrap();
        assert_eq!(p["partition"].as_i64().unwrap(), (i % 3) as i64);
        assert_eq!(p["offset"].as_i64().unwrap(), (i / 3) as i64, "offset acknowledged to kafka-python for record {i}");
        let c = consumed
            .iter()
            .find(|c| c["partition"] == p["partition"] && c["offset"] == p["offset"])
            .unwrap_or_else(|| panic!("record {i} not consumed"));
        assert_eq!(c["key"], p["key"]);
        assert_eq!(c["value"], p["value"]);
        assert_eq!(c["timestamp"], p["timestamp"]);
        assert_eq!(c["headers"], serde_json::json!([["idx", i.to_string()], ["client", "kafka-python"]]));
    }
    for p in 0..3 {
        assert_eq!(v["end_offsets"][p.to_string()].as_i64(), Some(10), "end offset of partition {p}");
    }
    // And librdkafka reads what kafka-python wrote (gzip batches).
    let recs = consume_all(&addr, &topic, &[0, 1, 2], Duration::from_secs(30));
    assert_eq!(recs.len(), 30);
    let r = recs.iter().find(|r| r.partition == 1 && r.offset == 2).unwrap();
    assert_eq!(r.key.as_deref(), Some(&b"key-7"[..]));

    // KafkaAdminClient.list_topics() (Metadata v8 with authorized operations
    // requested) — checked last so the checks above still report.
    assert!(
        v.get("list_topics_error").is_none(),
        "KafkaAdminClient.list_topics() failed: {} (Metadata v8+ with include_*_authorized_operations=true \
         must return real operation bitfields, not -2147483648)",
        v["list_topics_error"]
    );
    assert_eq!(v["listed"], serde_json::Value::Bool(true), "KafkaAdminClient.list_topics must list the created topic");
}

#[test]
fn corestream_cli_topic_produce_consume() {
    let broker = Broker::start(2, &[]);
    let addr = broker.addr();
    let topic = unique("cli");

    let mut c = Command::new(BIN);
    c.args(["topic", "create", &topic, "--partitions", "3", "-b", &addr]);
    check(&run(c, b"", Duration::from_secs(60)), "corestream topic create");
    assert_eq!(partition_count(&addr, &topic), Some(3), "topic created by the CLI");

    let lines: String = (0..12).map(|i| format!("key{i}\tcli value {i}\n")).collect();
    let mut c = Command::new(BIN);
    c.args(["produce", &topic, "-b", &addr]);
    check(&run(c, lines.as_bytes(), Duration::from_secs(60)), "corestream produce");

    // Exactly what was typed is stored: key before the tab, value after.
    let recs = consume_all(&addr, &topic, &[0, 1, 2], Duration::from_secs(30));
    assert_eq!(recs.len(), 12, "records produced by the CLI: {recs:?}");
    let mut pairs: Vec<(String, String)> = recs
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().expect("CLI record without key")).unwrap(),
                String::from_utf8(r.value.clone().expect("CLI record without value")).unwrap(),
            )
        })
        .collect();
    pairs.sort();
    let mut want: Vec<(String, String)> = (0..12).map(|i| (format!("key{i}"), format!("cli value {i}"))).collect();
    want.sort();
    assert_eq!(pairs, want);
    // Within a partition, the lines keep their input order.
    for p in 0..3 {
        let vals: Vec<usize> = recs
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| String::from_utf8_lossy(r.value.as_ref().unwrap()).trim_start_matches("cli value ").parse().unwrap())
            .collect();
        assert!(vals.windows(2).all(|w| w[0] < w[1]), "partition {p} not in input order: {vals:?}");
    }

    let mut c = Command::new(BIN);
    c.args(["consume", &topic, "-b", &addr, "--from", "beginning", "--count", "12", "--print-offset"]);
    let out = run(c, b"", Duration::from_secs(60));
    check(&out, "corestream consume");
    // `--print-offset` prefixes each value with `partition:offset<TAB>`.
    let mut lines: Vec<String> = out.stdout.lines().filter(|l| !l.trim().is_empty()).map(String::from).collect();
    lines.sort();
    let mut want: Vec<String> = recs
        .iter()
        .map(|r| format!("{}:{}\t{}", r.partition, r.offset, String::from_utf8_lossy(r.value.as_ref().unwrap())))
        .collect();
    want.sort();
    assert_eq!(lines, want, "corestream consume --print-offset output");

    // `--print-key` adds `key<TAB>`; one partition only with `-p`.
    let mut c = Command::new(BIN);
    c.args(["consume", &topic, "-b", &addr, "--from", "beginning", "-p", "1", "--print-key", "--timeout-ms", "2000"]);
    let out = run(c, b"", Duration::from_secs(60));
    check(&out, "corestream consume -p 1 --print-key");
    let got: Vec<String> = out.stdout.lines().filter(|l| !l.trim().is_empty()).map(String::from).collect();
    let want: Vec<String> = recs
        .iter()
        .filter(|r| r.partition == 1)
        .map(|r| format!("{}\t{}", String::from_utf8_lossy(r.key.as_ref().unwrap()), String::from_utf8_lossy(r.value.as_ref().unwrap())))
        .collect();
    assert_eq!(got, want, "corestream consume -p 1 --print-key output (in offset order)");

    // --count bounds the output even when more records exist.
    let mut c = Command::new(BIN);
    c.args(["consume", &topic, "-b", &addr, "--from", "beginning", "--count", "5"]);
    let out = run(c, b"", Duration::from_secs(60));
    check(&out, "corestream consume --count 5");
    assert_eq!(out.stdout.lines().filter(|l| !l.trim().is_empty()).count(), 5, "--count 5 printed:\n{}", out.stdout);
}
