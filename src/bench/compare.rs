//! `bench compare`: measure the machine, then for each broker in turn
//! (corestream first, then Apache Kafka, tansu and `--peer`s when present)
//! start it, run the chosen workloads against it, stop it; finally write
//! `<out>/results.json`, `<out>/results.md` and the SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::brokers::{self, BrokerKind, BrokerSpec};
use super::machine::{self, MachineInfo};
use super::report::{self, metric_rows, LatencySummary, RunResult};
use super::runner::{self, RunOptions};
use super::svg::{grouped_bar_chart, Series};
use super::workload::{Workload, MAX_REFERENCE_WORKLOAD};

/// What `bench compare` does.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Workloads in run order.
    pub workloads: Vec<String>,
    /// Override of every workload's duration.
    pub duration: Option<Duration>,
    /// Override of every workload's warm-up.
    pub warmup: Option<Duration>,
    /// Report directory.
    pub out: PathBuf,
    /// Where brokers' data directories go (and the O_DIRECT test file).
    pub data_root: PathBuf,
    /// Brokers in order; the first is the reference of the ratios.
    pub brokers: Vec<BrokerSpec>,
    /// Extra librdkafka properties.
    pub props: Vec<(String, String)>,
    /// Skip the loopback / O_DIRECT measurements.
    pub skip_machine: bool,
    /// The command line, for the report.
    pub command_line: String,
}

/// One broker's part of the report.
#[derive(Clone, Debug, Serialize)]
pub struct BrokerReport {
    /// Label.
    pub name: String,
    /// Address it ran on.
    pub address: String,
    /// Version string.
    pub version: String,
    /// Settings used.
    pub settings: Vec<String>,
    /// Why it could not be started, if so.
    pub start_error: Option<String>,
    /// How it stopped.
    pub stop: String,
    /// Per workload: the result or the error.
    pub runs: Vec<WorkloadOutcome>,
}

/// A workload's result or error on one broker.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadOutcome {
    /// Workload name.
    pub workload: String,
    /// Its result.
    pub result: Option<RunResult>,
    /// Or why it failed.
    pub error: Option<String>,
}

/// Everything `compare` measured.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// Unix time of the start.
    pub started_unix: u64,
    /// Command line.
    pub command_line: String,
    /// librdkafka version used by the load generator.
    pub librdkafka: String,
    /// The machine.
    pub machine: Option<MachineInfo>,
    /// Workloads in order.
    pub workloads: Vec<String>,
    /// Brokers in order.
    pub brokers: Vec<BrokerReport>,
}

/// Applies the duration / warm-up overrides to a standard workload.
pub fn workload_for(name: &str, duration: Option<Duration>, warmup: Option<Duration>) -> Result<Workload> {
    let mut w = Workload::standard(name)?;
    if let Some(d) = duration {
        w.duration = d;
    }
    if let Some(wu) = warmup {
        w.warmup = wu;
    } else if let Some(d) = duration {
        // Keep the warm-up at most a fifth of a shortened run (still >= 1 s).
        w.warmup = w.warmup.min((d / 5).max(Duration::from_secs(1)));
    }
    w.validate()?;
    Ok(w)
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// Runs the comparison and writes the report; returns the path of results.md.
pub fn compare(opts: &CompareOptions) -> Result<PathBuf> {
    std::fs::create_dir_all(&opts.out).with_context(|| format!("create {}", opts.out.display()))?;
    std::fs::create_dir_all(&opts.data_root).with_context(|| format!("create {}", opts.data_root.display()))?;
    for name in &opts.workloads {
        workload_for(name, opts.duration, opts.warmup)?;
    }
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let machine = if opts.skip_machine {
        None
    } else {
        progress("measuring loopback TCP, O_DIRECT bandwidth and small-write latency");
        let m = machine::measure(&opts.data_root);
        progress(&format!(
            "loopback {} MB/s, O_DIRECT write {} MB/s, read {} MB/s, 4 KiB write p99 {}, with fdatasync p99 {}",
            m.loopback_tcp_mb_per_sec.map(report::fmt_value).unwrap_or_else(|| "-".into()),
            m.direct_write_mb_per_sec.map(report::fmt_value).unwrap_or_else(|| "-".into()),
            m.direct_read_mb_per_sec.map(report::fmt_value).unwrap_or_else(|| "-".into()),
            m.small_write.as_ref().map(|l| ms(l.p99_us)).unwrap_or_else(|| "-".into()),
            m.small_synced_write.as_ref().map(|l| ms(l.p99_us)).unwrap_or_else(|| "-".into()),
        ));
        Some(m)
    };
    let logs = opts.out.join("logs");
    let mut reports = Vec::new();
    for spec in &opts.brokers {
        progress(&format!("starting {}", spec.name));
        reports.push(run_broker(spec, opts, &logs));
    }
    let report = CompareReport {
        started_unix,
        command_line: opts.command_line.clone(),
        librdkafka: rdkafka::util::get_rdkafka_version().1,
        machine,
        workloads: opts.workloads.clone(),
        brokers: reports,
    };
    write_outputs(&report, &opts.out)
}

fn run_broker(spec: &BrokerSpec, opts: &CompareOptions, logs: &Path) -> BrokerReport {
    let mut br = BrokerReport {
        name: spec.name.clone(),
        address: String::new(),
        version: String::new(),
        settings: Vec::new(),
        start_error: None,
        stop: String::new(),
        runs: Vec::new(),
    };
    let mut proc = match brokers::start(spec, &opts.data_root, logs) {
        Ok(p) => p,
        Err(e) => {
            progress(&format!("{} did not start: {e:#}", spec.name));
            br.start_error = Some(format!("{e:#}"));
            br.runs = opts
                .workloads
                .iter()
                .map(|w| WorkloadOutcome { workload: w.clone(), result: None, error: Some("broker did not start".into()) })
                .collect();
            return br;
        }
    };
    br.address = proc.addr.clone();
    br.version = proc.version.clone();
    br.settings = proc.settings.clone();
    let mut max_msg_per_sec: Option<f64> = None;
    for name in &opts.workloads {
        if !proc.is_alive() {
            br.runs.push(WorkloadOutcome {
                workload: name.clone(),
                result: None,
                error: Some("broker process exited".into()),
            });
            continue;
        }
        // latency-half needs this broker's own maximum: measure it if the
        // list did not include the reference workload before.
        if name == "latency-half" && max_msg_per_sec.is_none() {
            progress(&format!("{}: {MAX_REFERENCE_WORKLOAD} (maximum for latency-half)", spec.name));
            let outcome = run_one(&proc, MAX_REFERENCE_WORKLOAD, opts, None);
            if let Some(r) = &outcome.result {
                max_msg_per_sec = Some(r.produce.msg_per_sec);
                println!("{}", report::human_summary(r));
            }
            br.runs.push(outcome);
        }
        progress(&format!("{}: {name}", spec.name));
        let outcome = run_one(&proc, name, opts, max_msg_per_sec);
        if let Some(r) = &outcome.result {
            if name == MAX_REFERENCE_WORKLOAD {
                max_msg_per_sec = Some(r.produce.msg_per_sec);
            }
            println!("{}", report::human_summary(r));
        }
        if let Some(e) = &outcome.error {
            progress(&format!("{}: {name} failed: {e}", spec.name));
        }
        br.runs.push(outcome);
    }
    br.stop = proc.stop();
    progress(&format!("{}: {}", spec.name, br.stop));
    br
}

fn run_one(proc: &brokers::BrokerProcess, name: &str, opts: &CompareOptions, max: Option<f64>) -> WorkloadOutcome {
    let res = workload_for(name, opts.duration, opts.warmup).and_then(|w| {
        let ro = RunOptions {
            bootstrap: proc.addr.clone(),
            broker_name: proc.name.clone(),
            broker_pid: proc.pid,
            props: opts.props.clone(),
            measured_max_msg_per_sec: max,
            keep_topic: false,
        };
        runner::run_workload(&w, &ro)
    });
    match res {
        Ok(r) => WorkloadOutcome { workload: name.to_string(), result: Some(r), error: None },
        Err(e) => WorkloadOutcome { workload: name.to_string(), result: None, error: Some(format!("{e:#}")) },
    }
}

/// UTC date and time (`YYYY-MM-DD HH:MM:SS UTC`) of a Unix time.
pub fn utc_string(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The last result of `workload` for each broker (None where missing).
fn results_for<'a>(report: &'a CompareReport, workload: &str) -> Vec<Option<&'a RunResult>> {
    report
        .brokers
        .iter()
        .map(|b| b.runs.iter().rev().find(|r| r.workload == workload).and_then(|r| r.result.as_ref()))
        .collect()
}

/// Workload names in report order (each once, including added reference runs).
fn report_workloads(report: &CompareReport) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for b in &report.brokers {
        for r in &b.runs {
            if !names.contains(&r.workload) {
                names.push(r.workload.clone());
            }
        }
    }
    for w in &report.workloads {
        if !names.contains(w) {
            names.push(w.clone());
        }
    }
    names
}

/// The machine's limits as Markdown list items (also what `bench machine` prints).
pub fn machine_markdown(m: &MachineInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "- machine: {} CPUs ({}), {:.1} GiB RAM, kernel {}", m.nproc, m.cpu_model, m.mem_gib, m.kernel);
    let lo = m.loopback_tcp_mb_per_sec.map(report::fmt_value).unwrap_or_else(|| {
        format!("failed: {}", m.loopback_error.clone().unwrap_or_default())
    });
    let _ = writeln!(s, "- loopback TCP (one std sender thread, one receiver, 2 s): {lo} MB/s");
    match (m.direct_write_mb_per_sec, m.direct_read_mb_per_sec) {
        (Some(w), Some(r)) => {
            let _ = writeln!(
                s,
                "- O_DIRECT 256 MiB in 1 MiB blocks in `{}`: write + fdatasync {} MB/s, read {} MB/s",
                m.direct_io_dir,
                report::fmt_value(w),
                report::fmt_value(r)
            );
        }
        _ => {
            let _ = writeln!(s, "- O_DIRECT test failed: {}", m.direct_io_error.clone().unwrap_or_default());
        }
    }
    match (&m.small_write, &m.small_synced_write) {
        (Some(w), Some(ws)) => {
            let _ = writeln!(
                s,
                "- one 4 KiB O_DIRECT overwrite, the floor under ack latency of a broker that acknowledges \
                 only what reached the device: alone {} (acks=1), followed by fdatasync {} (acks=all with fsync)",
                latency_line(w),
                latency_line(ws)
            );
        }
        _ => {
            let _ = writeln!(s, "- small-write latency test failed: {}", m.small_write_error.clone().unwrap_or_default());
        }
    }
    s
}

/// Microseconds as "X.XX ms".
fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// "p50 X ms, p99 Y ms, p99.9 Z ms, max W ms (N writes)".
fn latency_line(l: &LatencySummary) -> String {
    format!("p50 {}, p99 {}, p99.9 {}, max {} ({} writes)", ms(l.p50_us), ms(l.p99_us), ms(l.p999_us), ms(l.max_us), l.count)
}

/// The Markdown report.
pub fn markdown(report: &CompareReport) -> String {
    let mut s = String::new();
    let names: Vec<String> = report.brokers.iter().map(|b| b.name.clone()).collect();
    let _ = writeln!(s, "# corestream bench compare\n");
    let _ = writeln!(s, "- date: {}", utc_string(report.started_unix));
    let _ = writeln!(s, "- command: `{}`", report.command_line);
    let _ = writeln!(s, "- load generator: `corestream bench` on librdkafka {}, on the same machine as the broker", report.librdkafka);
    if let Some(m) = &report.machine {
        s.push_str(&machine_markdown(m));
    }
    let _ = writeln!(
        s,
        "\nClient and broker share the machine, so every number includes the load generator's own CPU use; \
on a small shared machine expect run-to-run noise of 10-30%. Compare brokers within one run (the ratio \
columns), not across runs. MB = 10^6 bytes. Latencies in µs: `ack` is send() to the delivery report, \
`e2e` is the producer's send time (written into the payload, CLOCK_MONOTONIC) to the consumer's receipt. \
Broker CPU s/GB is the broker process's utime+stime over the measured window per GB produced plus consumed. \
Ratios are {}/peer: above 1 is better for throughput rows, below 1 is better for latency and cost rows.\n",
        names.first().cloned().unwrap_or_default()
    );
    let _ = writeln!(s, "## Brokers\n");
    for b in &report.brokers {
        let _ = writeln!(s, "### {} {}\n", b.name, if b.version.is_empty() { String::new() } else { format!("({})", b.version) });
        if let Some(e) = &b.start_error {
            let _ = writeln!(s, "Did not start: {e}\n");
            continue;
        }
        for line in &b.settings {
            let _ = writeln!(s, "- {line}");
        }
        let _ = writeln!(s, "- {}\n", b.stop);
    }
    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(s, "![produce throughput](throughput-produce.svg)\n![consume throughput](throughput-consume.svg)\n");
    for wl in report_workloads(report) {
        let results = results_for(report, &wl);
        let _ = writeln!(s, "### {wl}\n");
        if let Some(r) = results.iter().flatten().next() {
            let _ = writeln!(s, "{}\n", r.workload.describe());
        }
        for (b, r) in report.brokers.iter().zip(&results) {
            if let Some(r) = r {
                if let Some(t) = r.target_msg_per_sec {
                    let _ = writeln!(s, "- {}: target rate {t:.0} msg/s ({:.1} MB/s)", b.name, t * r.workload.message_size as f64 / 1e6);
                }
            }
        }
        let rows = metric_rows(&results);
        if rows.is_empty() {
            let _ = writeln!(s, "No broker completed this workload.\n");
        } else {
            let _ = writeln!(s, "\n{}", report::markdown_table(&names, &rows));
        }
        for b in &report.brokers {
            for o in b.runs.iter().filter(|o| o.workload == wl) {
                if let Some(e) = &o.error {
                    let _ = writeln!(s, "- {} failed: {}", b.name, e.replace('\n', " "));
                }
                if let Some(r) = &o.result {
                    for n in &r.notes {
                        let _ = writeln!(s, "- {}: {}", b.name, n.replace('\n', " "));
                    }
                }
            }
        }
        if results.iter().flatten().any(|r| r.ack_latency.is_some() || r.e2e_latency.is_some()) {
            let _ = writeln!(s, "\n![latency {wl}](latency-{wl}.svg)");
        }
        s.push('\n');
    }
    s
}

/// The throughput chart (produce or consume MB/s, per workload and broker).
pub fn throughput_svg(report: &CompareReport, consume: bool) -> String {
    let workloads = report_workloads(report);
    let series: Vec<Series> = report
        .brokers
        .iter()
        .enumerate()
        .map(|(i, b)| Series {
            name: b.name.clone(),
            values: workloads
                .iter()
                .map(|w| {
                    results_for(report, w)[i].map(|r| if consume { r.consume.mb_per_sec } else { r.produce.mb_per_sec })
                })
                .collect(),
        })
        .collect();
    grouped_bar_chart(
        if consume { "Consume throughput per workload" } else { "Produce throughput per workload" },
        "MB/s",
        &workloads,
        &series,
        false,
    )
}

/// The latency chart of one workload: ack and e2e percentiles per broker.
pub fn latency_svg(report: &CompareReport, workload: &str) -> String {
    let results = results_for(report, workload);
    let labels = ["p50", "p99", "p99.9", "p99.99", "max"];
    let mut groups: Vec<String> = Vec::new();
    for kind in ["ack", "e2e"] {
        for l in labels {
            groups.push(format!("{kind} {l}"));
        }
    }
    let series: Vec<Series> = report
        .brokers
        .iter()
        .zip(&results)
        .map(|(b, r)| {
            let mut values = Vec::new();
            for pick in [|r: &RunResult| r.ack_latency.clone(), |r: &RunResult| r.e2e_latency.clone()] {
                let l = r.and_then(pick);
                for i in 0..labels.len() {
                    values.push(l.as_ref().map(|l| l.points()[i].1 as f64));
                }
            }
            Series { name: b.name.clone(), values }
        })
        .collect();
    grouped_bar_chart(&format!("Latency percentiles: {workload}"), "µs", &groups, &series, true)
}

fn write_outputs(report: &CompareReport, out: &Path) -> Result<PathBuf> {
    let json = serde_json::to_string_pretty(report).context("serialize report")?;
    std::fs::write(out.join("results.json"), json).context("write results.json")?;
    std::fs::write(out.join("throughput-produce.svg"), throughput_svg(report, false)).context("write svg")?;
    std::fs::write(out.join("throughput-consume.svg"), throughput_svg(report, true)).context("write svg")?;
    for wl in report_workloads(report) {
        let results = results_for(report, &wl);
        if results.iter().flatten().any(|r| r.ack_latency.is_some() || r.e2e_latency.is_some()) {
            std::fs::write(out.join(format!("latency-{wl}.svg")), latency_svg(report, &wl)).context("write svg")?;
        }
    }
    let md = out.join("results.md");
    std::fs::write(&md, markdown(report)).context("write results.md")?;
    Ok(md)
}

/// Which brokers `compare` measures (besides corestream, which always runs).
#[derive(Clone, Debug, Default)]
pub struct BrokerSelection {
    /// The corestream binary.
    pub corestream_bin: PathBuf,
    /// corestream `--cores`.
    pub cores: Option<usize>,
    /// corestream `--set k=v`.
    pub sets: Vec<String>,
    /// Kafka distribution (else `KAFKA_HOME`).
    pub kafka_home: Option<PathBuf>,
    /// Kafka: fsync every append.
    pub kafka_fsync: bool,
    /// tansu binary (else `TANSU_BIN`, else PATH).
    pub tansu_bin: Option<PathBuf>,
    /// tansu storage engine URL.
    pub tansu_storage: String,
    /// `--peer NAME=host:port`.
    pub peers: Vec<(String, String)>,
    /// Look for Kafka and tansu (false: only corestream and `peers`).
    pub auto_peers: bool,
}

/// The brokers to compare: corestream, then Kafka / tansu when found, then
/// explicit peers.
pub fn select_brokers(sel: BrokerSelection) -> Vec<BrokerSpec> {
    let mut v = vec![BrokerSpec {
        name: "corestream".into(),
        kind: BrokerKind::Corestream { bin: sel.corestream_bin, cores: sel.cores, sets: sel.sets },
    }];
    if !sel.auto_peers {
        // Only the explicit peers.
    } else if let Some(home) = brokers::find_kafka(sel.kafka_home.as_deref()) {
        v.push(BrokerSpec { name: "kafka".into(), kind: BrokerKind::Kafka { home, fsync_every_message: sel.kafka_fsync } });
    } else {
        progress("no Apache Kafka (set KAFKA_HOME to a Kafka distribution to include it)");
    }
    if !sel.auto_peers {
        // Only the explicit peers.
    } else if let Some(bin) = sel.tansu_bin.or_else(brokers::find_tansu) {
        v.push(BrokerSpec { name: "tansu".into(), kind: BrokerKind::Tansu { bin, storage: sel.tansu_storage } });
    } else {
        progress("no tansu (put it on PATH or set TANSU_BIN to include it)");
    }
    for (name, addr) in sel.peers {
        v.push(BrokerSpec { name, kind: BrokerKind::External { addr } });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{LatencySummary, Throughput};

    #[test]
    fn utc_dates() {
        assert_eq!(utc_string(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_string(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_string(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn overrides_shorten_warmup() {
        let w = workload_for("max-throughput-acks1", Some(Duration::from_secs(5)), None).unwrap();
        assert_eq!(w.duration, Duration::from_secs(5));
        assert_eq!(w.warmup, Duration::from_secs(1));
        let w = workload_for("scale", None, Some(Duration::from_secs(3))).unwrap();
        assert_eq!(w.warmup, Duration::from_secs(3));
        assert!(workload_for("nope", None, None).is_err());
    }

    fn result(broker: &str, wl: &str, mbs: f64) -> RunResult {
        let lat = LatencySummary { count: 5, mean_us: 10.0, p50_us: 10, p99_us: 20, p999_us: 30, p9999_us: 40, max_us: 50 };
        RunResult {
            broker: broker.into(),
            address: "a".into(),
            workload: Workload::standard(wl).unwrap(),
            target_msg_per_sec: Some(100.0),
            topic: "t".into(),
            started_unix: 0,
            measured_seconds: 1.0,
            produce: Throughput::new(100, (mbs * 1e6) as u64, 1.0),
            consume: Throughput::new(100, (mbs * 1e6) as u64, 1.0),
            sent: 100,
            produce_errors: 0,
            consume_errors: 0,
            ack_latency: Some(lat.clone()),
            e2e_latency: Some(lat),
            catch_up: None,
            broker_cpu: None,
            client_cpu_seconds: 0.0,
            notes: vec![],
        }
    }

    fn sample_report() -> CompareReport {
        let wls = ["max-throughput-acks1", "latency-25mbs"];
        let mk = |name: &str, mbs: f64, fail: bool| BrokerReport {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            version: "1".into(),
            settings: vec!["s=1".into()],
            start_error: None,
            stop: "stopped".into(),
            runs: wls
                .iter()
                .map(|w| WorkloadOutcome {
                    workload: w.to_string(),
                    result: (!fail || *w != "latency-25mbs").then(|| result(name, w, mbs)),
                    error: (fail && *w == "latency-25mbs").then(|| "boom".to_string()),
                })
                .collect(),
        };
        CompareReport {
            started_unix: 1_700_000_000,
            command_line: "corestream bench compare".into(),
            librdkafka: "2.12.1".into(),
            machine: Some(MachineInfo {
                nproc: 2,
                loopback_tcp_mb_per_sec: Some(5000.0),
                small_write: Some(LatencySummary {
                    count: 2000,
                    mean_us: 400.0,
                    p50_us: 330,
                    p99_us: 2560,
                    p999_us: 6900,
                    p9999_us: 28670,
                    max_us: 28670,
                }),
                small_synced_write: None,
                small_write_error: Some("fdatasync: boom".into()),
                ..MachineInfo::default()
            }),
            workloads: wls.iter().map(|s| s.to_string()).collect(),
            brokers: vec![mk("corestream", 400.0, false), mk("kafka", 200.0, true)],
        }
    }

    #[test]
    fn markdown_report_has_tables_and_failures() {
        let md = markdown(&sample_report());
        assert!(md.contains("| metric | corestream | kafka | corestream/kafka |"));
        assert!(md.contains("| produce MB/s | 400 | 200 | 2.00 |"), "{md}");
        assert!(md.contains("- kafka failed: boom"));
        assert!(md.contains("2023-11-14 22:13:20 UTC"));
        assert!(md.contains("![latency latency-25mbs](latency-latency-25mbs.svg)"));
        assert!(md.contains("loopback TCP"));
        assert!(md.contains("- small-write latency test failed: fdatasync: boom"), "{md}");
        let mut both = sample_report();
        if let Some(m) = both.machine.as_mut() {
            m.small_synced_write = m.small_write.clone();
        }
        assert!(
            markdown(&both).contains("alone p50 0.33 ms, p99 2.56 ms, p99.9 6.90 ms, max 28.67 ms (2000 writes) (acks=1)"),
            "{}",
            markdown(&both)
        );
    }

    #[test]
    fn charts_have_one_bar_per_value() {
        let r = sample_report();
        // 2 workloads x 2 brokers, less kafka's failed latency-25mbs.
        assert_eq!(throughput_svg(&r, false).matches(r#"class="bar""#).count(), 3);
        // 10 latency points for corestream; kafka failed latency-25mbs.
        assert_eq!(latency_svg(&r, "latency-25mbs").matches(r#"class="bar""#).count(), 10);
        assert_eq!(latency_svg(&r, "max-throughput-acks1").matches(r#"class="bar""#).count(), 20);
    }

    #[test]
    fn writes_all_outputs() {
        let dir = std::env::temp_dir().join(format!("cs-bench-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let md = write_outputs(&sample_report(), &dir).unwrap();
        assert!(md.ends_with("results.md"));
        for f in ["results.json", "throughput-produce.svg", "throughput-consume.svg", "latency-latency-25mbs.svg"] {
            assert!(dir.join(f).exists(), "{f}");
        }
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        assert_eq!(v["brokers"].as_array().unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
