//! Results of a run and their presentation: latency summaries taken from
//! `histogram::Histogram`, the JSON record, the human-readable summary, and
//! the Markdown comparison tables of `bench compare`.
//!
//! Units: latencies in microseconds; MB = 10^6 bytes, GB = 10^9 bytes.

use std::fmt::Write as _;

use histogram::Histogram;
use serde::Serialize;

use super::workload::Workload;

/// Histogram layout for latencies in microseconds: relative error under
/// 1% (grouping power 7), values up to 2^40 µs.
pub const LATENCY_GROUPING_POWER: u8 = 7;
/// See [`LATENCY_GROUPING_POWER`].
pub const LATENCY_MAX_VALUE_POWER: u8 = 40;

/// A fresh latency histogram (µs).
pub fn latency_histogram() -> Histogram {
    // The constants are valid (grouping power < max value power <= 64).
    Histogram::new(LATENCY_GROUPING_POWER, LATENCY_MAX_VALUE_POWER).expect("valid histogram parameters")
}

/// Percentiles of one latency distribution, in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Mean (exact).
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// 99.99th percentile.
    pub p9999_us: u64,
    /// Largest sample (exact).
    pub max_us: u64,
}

impl LatencySummary {
    /// Summarises a histogram; `exact_max` and `sum` are tracked beside it
    /// (the histogram only knows bucket ranges). Percentiles are each
    /// bucket's upper bound, clamped to the exact maximum, so
    /// p50 <= p99 <= p99.9 <= p99.99 <= max always holds. None if empty.
    pub fn from_histogram(h: &Histogram, exact_max: u64, sum: u128) -> Option<LatencySummary> {
        let count: u64 = h.as_slice().iter().sum();
        if count == 0 {
            return None;
        }
        let ps = h.percentiles(&[50.0, 99.0, 99.9, 99.99]).ok().flatten()?;
        let get = |i: usize| ps.get(i).map(|(_, b)| b.end().min(exact_max)).unwrap_or(exact_max);
        Some(LatencySummary {
            count,
            mean_us: sum as f64 / count as f64,
            p50_us: get(0),
            p99_us: get(1),
            p999_us: get(2),
            p9999_us: get(3),
            max_us: exact_max,
        })
    }

    /// (label, value) pairs in display order.
    pub fn points(&self) -> [(&'static str, u64); 5] {
        [
            ("p50", self.p50_us),
            ("p99", self.p99_us),
            ("p99.9", self.p999_us),
            ("p99.99", self.p9999_us),
            ("max", self.max_us),
        ]
    }
}

/// Messages and bytes over a time span.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Throughput {
    /// Messages counted.
    pub messages: u64,
    /// Payload bytes counted (keys excluded).
    pub bytes: u64,
    /// Span they were counted over.
    pub seconds: f64,
    /// messages / seconds.
    pub msg_per_sec: f64,
    /// bytes / seconds / 10^6.
    pub mb_per_sec: f64,
}

impl Throughput {
    /// Builds the rates from counts and a span (zero span gives zero rates).
    pub fn new(messages: u64, bytes: u64, seconds: f64) -> Throughput {
        let (m, b) = if seconds > 0.0 {
            (messages as f64 / seconds, bytes as f64 / seconds / 1e6)
        } else {
            (0.0, 0.0)
        };
        Throughput { messages, bytes, seconds, msg_per_sec: m, mb_per_sec: b }
    }
}

/// Broker CPU use over the measured window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BrokerCpu {
    /// Process sampled.
    pub pid: u32,
    /// utime + stime over the window, seconds.
    pub cpu_seconds: f64,
    /// Bytes produced + bytes consumed in the window, in GB (10^9).
    pub gb_moved: f64,
    /// cpu_seconds / gb_moved (None when nothing moved).
    pub cpu_seconds_per_gb: Option<f64>,
    /// Average cores busy: cpu_seconds / window seconds.
    pub cores_busy: f64,
}

impl BrokerCpu {
    /// Derives the ratios.
    pub fn new(pid: u32, cpu_seconds: f64, bytes_moved: u64, window_secs: f64) -> BrokerCpu {
        let gb = bytes_moved as f64 / 1e9;
        BrokerCpu {
            pid,
            cpu_seconds,
            gb_moved: gb,
            cpu_seconds_per_gb: (gb > 0.0).then(|| cpu_seconds / gb),
            cores_busy: if window_secs > 0.0 { cpu_seconds / window_secs } else { 0.0 },
        }
    }
}

/// Catch-up phase details.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CatchUp {
    /// Backlog produced (acknowledged) before consuming.
    pub backlog_messages: u64,
    /// Backlog payload bytes.
    pub backlog_bytes: u64,
    /// Time to produce the backlog.
    pub produce_seconds: f64,
    /// Time from the consumers' start to the last backlog record read.
    pub drain_seconds: f64,
    /// Whether every backlog record was read before the drain bound.
    pub complete: bool,
}

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunResult {
    /// Broker label (`corestream`, `kafka`, or what `--broker-name` said).
    pub broker: String,
    /// Bootstrap address.
    pub address: String,
    /// The workload as run.
    pub workload: Workload,
    /// Resolved target rate in msg/s (None: unthrottled).
    pub target_msg_per_sec: Option<f64>,
    /// Topic created for the run.
    pub topic: String,
    /// Unix time (seconds) the run started.
    pub started_unix: u64,
    /// Length of the measured window in seconds.
    pub measured_seconds: f64,
    /// Acknowledged produce throughput in the window.
    pub produce: Throughput,
    /// Consume throughput in the window (catch-up: over the drain).
    pub consume: Throughput,
    /// Records sent in the window (acknowledged or not).
    pub sent: u64,
    /// Delivery failures over the whole run.
    pub produce_errors: u64,
    /// Consumer errors over the whole run.
    pub consume_errors: u64,
    /// send -> delivery report.
    pub ack_latency: Option<LatencySummary>,
    /// producer send timestamp -> consumer receipt (tail mode only).
    pub e2e_latency: Option<LatencySummary>,
    /// Catch-up details.
    pub catch_up: Option<CatchUp>,
    /// Broker CPU in the window, when its pid is known.
    pub broker_cpu: Option<BrokerCpu>,
    /// This benchmark process's own CPU seconds in the window.
    pub client_cpu_seconds: f64,
    /// Anything worth knowing (first errors, incomplete drains, ...).
    pub notes: Vec<String>,
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "-".into(),
    }
}

/// The human-readable summary printed by `bench run`.
pub fn human_summary(r: &RunResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "workload {} against {} ({})", r.workload.name, r.broker, r.address);
    let _ = writeln!(s, "  {}", r.workload.describe());
    if let Some(t) = r.target_msg_per_sec {
        let _ = writeln!(s, "  target rate: {t:.0} msg/s ({:.1} MB/s)", t * r.workload.message_size as f64 / 1e6);
    }
    let _ = writeln!(s, "  topic {}, measured window {:.2} s", r.topic, r.measured_seconds);
    let _ = writeln!(
        s,
        "  produce: {:>10.1} MB/s {:>12.0} msg/s   ({} acked, {} sent in window, {} errors)",
        r.produce.mb_per_sec, r.produce.msg_per_sec, r.produce.messages, r.sent, r.produce_errors
    );
    let _ = writeln!(
        s,
        "  consume: {:>10.1} MB/s {:>12.0} msg/s   ({} records, {} errors)",
        r.consume.mb_per_sec, r.consume.msg_per_sec, r.consume.messages, r.consume_errors
    );
    if let Some(c) = &r.catch_up {
        let _ = writeln!(
            s,
            "  catch-up: backlog {} records / {:.1} MB produced in {:.2} s, drained in {:.2} s{}",
            c.backlog_messages,
            c.backlog_bytes as f64 / 1e6,
            c.produce_seconds,
            c.drain_seconds,
            if c.complete { "" } else { " (INCOMPLETE)" }
        );
    }
    let _ = writeln!(s, "  latency (µs)        count        p50        p99      p99.9     p99.99        max");
    for (label, l) in [("produce ack", &r.ack_latency), ("end-to-end", &r.e2e_latency)] {
        match l {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "  {label:<14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                    l.count, l.p50_us, l.p99_us, l.p999_us, l.p9999_us, l.max_us
                );
            }
            None => {
                let _ = writeln!(s, "  {label:<14} {:>10}", "-");
            }
        }
    }
    match &r.broker_cpu {
        Some(c) => {
            let _ = writeln!(
                s,
                "  broker cpu (pid {}): {:.2} s over the window ({:.2} cores), {} CPU s/GB moved ({:.3} GB)",
                c.pid,
                c.cpu_seconds,
                c.cores_busy,
                fmt_opt(c.cpu_seconds_per_gb, 2),
                c.gb_moved
            );
        }
        None => {
            let _ = writeln!(s, "  broker cpu: unknown (no broker pid)");
        }
    }
    let _ = writeln!(s, "  client cpu: {:.2} s", r.client_cpu_seconds);
    for n in &r.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    s
}

/// One row of a comparison table: a label and a value per broker.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricRow {
    /// Metric name with its unit.
    pub label: String,
    /// True when a larger value is better (throughput), false for costs.
    pub higher_is_better: bool,
    /// Value per broker (None: not measured / failed).
    pub values: Vec<Option<f64>>,
}

/// The metric rows of a set of results for one workload, one column per
/// broker (None where that broker's run failed).
pub fn metric_rows(results: &[Option<&RunResult>]) -> Vec<MetricRow> {
    type Getter = fn(&RunResult) -> Option<f64>;
    fn lat(l: &Option<LatencySummary>, f: fn(&LatencySummary) -> u64) -> Option<f64> {
        l.as_ref().map(|l| f(l) as f64)
    }
    let defs: Vec<(&str, bool, Getter)> = vec![
        ("produce MB/s", true, |r| Some(r.produce.mb_per_sec)),
        ("produce msg/s", true, |r| Some(r.produce.msg_per_sec)),
        ("consume MB/s", true, |r| Some(r.consume.mb_per_sec)),
        ("consume msg/s", true, |r| Some(r.consume.msg_per_sec)),
        ("ack p50 µs", false, |r| lat(&r.ack_latency, |l| l.p50_us)),
        ("ack p99 µs", false, |r| lat(&r.ack_latency, |l| l.p99_us)),
        ("ack p99.9 µs", false, |r| lat(&r.ack_latency, |l| l.p999_us)),
        ("ack p99.99 µs", false, |r| lat(&r.ack_latency, |l| l.p9999_us)),
        ("ack max µs", false, |r| lat(&r.ack_latency, |l| l.max_us)),
        ("e2e p50 µs", false, |r| lat(&r.e2e_latency, |l| l.p50_us)),
        ("e2e p99 µs", false, |r| lat(&r.e2e_latency, |l| l.p99_us)),
        ("e2e p99.9 µs", false, |r| lat(&r.e2e_latency, |l| l.p999_us)),
        ("e2e p99.99 µs", false, |r| lat(&r.e2e_latency, |l| l.p9999_us)),
        ("e2e max µs", false, |r| lat(&r.e2e_latency, |l| l.max_us)),
        ("catch-up drain s", false, |r| r.catch_up.as_ref().map(|c| c.drain_seconds)),
        ("broker CPU s/GB", false, |r| r.broker_cpu.as_ref().and_then(|c| c.cpu_seconds_per_gb)),
        ("broker cores busy", false, |r| r.broker_cpu.as_ref().map(|c| c.cores_busy)),
        ("produce errors", false, |r| Some(r.produce_errors as f64)),
    ];
    defs.into_iter()
        .map(|(label, higher, get)| MetricRow {
            label: label.to_string(),
            higher_is_better: higher,
            values: results.iter().map(|r| r.and_then(get)).collect(),
        })
        .filter(|row| row.values.iter().any(|v| v.is_some()))
        .collect()
}

/// Formats a metric value: integers for big numbers, a few decimals for small.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `a / b` formatted, or `-` when undefined.
pub fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// A Markdown table: metric, one column per broker, then `first/other` ratio
/// columns (the first broker is corestream).
pub fn markdown_table(brokers: &[String], rows: &[MetricRow]) -> String {
    let mut s = String::new();
    let first = brokers.first().cloned().unwrap_or_default();
    s.push_str("| metric |");
    for b in brokers {
        let _ = write!(s, " {b} |");
    }
    for b in brokers.iter().skip(1) {
        let _ = write!(s, " {first}/{b} |");
    }
    s.push('\n');
    s.push_str("|---|");
    for _ in 0..(brokers.len() + brokers.len().saturating_sub(1)) {
        s.push_str("---:|");
    }
    s.push('\n');
    for row in rows {
        let _ = write!(s, "| {} |", row.label);
        for v in &row.values {
            let _ = write!(s, " {} |", v.map(fmt_value).unwrap_or_else(|| "-".into()));
        }
        let head = row.values.first().copied().flatten();
        for v in row.values.iter().skip(1) {
            let _ = write!(s, " {} |", fmt_ratio(head, *v));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::Workload;

    fn summary_of(values: &[u64]) -> Option<LatencySummary> {
        let mut h = latency_histogram();
        let mut max = 0;
        let mut sum = 0u128;
        for v in values {
            h.increment(*v).unwrap();
            max = max.max(*v);
            sum += *v as u128;
        }
        LatencySummary::from_histogram(&h, max, sum)
    }

    #[test]
    fn latency_summary_orders_percentiles() {
        assert!(summary_of(&[]).is_none());
        let values: Vec<u64> = (1..=10_000).collect();
        let l = summary_of(&values).unwrap();
        assert_eq!(l.count, 10_000);
        assert!(l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.p9999_us && l.p9999_us <= l.max_us);
        assert_eq!(l.max_us, 10_000);
        // Within the histogram's ~1% relative error.
        assert!((4950..=5100).contains(&l.p50_us), "{}", l.p50_us);
        assert!((9850..=10_000).contains(&l.p99_us), "{}", l.p99_us);
        assert!((l.mean_us - 5000.5).abs() < 1e-6);
        let one = summary_of(&[777]).unwrap();
        assert_eq!((one.p50_us, one.max_us), (777, 777));
    }

    #[test]
    fn throughput_and_cpu_ratios() {
        let t = Throughput::new(1000, 1_024_000, 2.0);
        assert_eq!(t.msg_per_sec, 500.0);
        assert!((t.mb_per_sec - 0.512).abs() < 1e-12);
        assert_eq!(Throughput::new(5, 5, 0.0).msg_per_sec, 0.0);
        let c = BrokerCpu::new(1, 3.0, 2_000_000_000, 10.0);
        assert_eq!(c.cpu_seconds_per_gb, Some(1.5));
        assert!((c.cores_busy - 0.3).abs() < 1e-12);
        assert_eq!(BrokerCpu::new(1, 3.0, 0, 10.0).cpu_seconds_per_gb, None);
    }

    fn sample_result(broker: &str, mbs: f64, p99: u64) -> RunResult {
        RunResult {
            broker: broker.into(),
            address: "127.0.0.1:1".into(),
            workload: Workload::default(),
            target_msg_per_sec: None,
            topic: "t".into(),
            started_unix: 0,
            measured_seconds: 10.0,
            produce: Throughput::new((mbs * 1e6 / 1024.0 * 10.0) as u64, (mbs * 1e7) as u64, 10.0),
            consume: Throughput::new(10, 10_240, 10.0),
            sent: 10,
            produce_errors: 0,
            consume_errors: 0,
            ack_latency: Some(LatencySummary {
                count: 10,
                mean_us: 1.0,
                p50_us: 100,
                p99_us: p99,
                p999_us: p99,
                p9999_us: p99,
                max_us: p99,
            }),
            e2e_latency: None,
            catch_up: None,
            broker_cpu: Some(BrokerCpu::new(9, 1.0, 1_000_000_000, 10.0)),
            client_cpu_seconds: 0.5,
            notes: vec!["hello".into()],
        }
    }

    #[test]
    fn human_summary_mentions_everything() {
        let s = human_summary(&sample_result("corestream", 400.0, 2000));
        for needle in ["max", "produce:", "consume:", "produce ack", "end-to-end", "broker cpu (pid 9)", "note: hello", "400.0 MB/s"] {
            assert!(s.contains(needle), "missing {needle} in\n{s}");
        }
        serde_json::to_string(&sample_result("x", 1.0, 1)).unwrap();
    }

    #[test]
    fn markdown_table_has_ratios() {
        let a = sample_result("corestream", 400.0, 2000);
        let b = sample_result("kafka", 200.0, 4000);
        let rows = metric_rows(&[Some(&a), Some(&b), None]);
        // e2e rows are absent (no broker measured them); catch-up too.
        assert!(rows.iter().all(|r| !r.label.starts_with("e2e")));
        let t = markdown_table(&["corestream".into(), "kafka".into(), "tansu".into()], &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| metric | corestream | kafka | tansu | corestream/kafka | corestream/tansu |");
        assert_eq!(lines[1], "|---|---:|---:|---:|---:|---:|");
        assert_eq!(lines.len(), 2 + rows.len());
        let mbs = lines.iter().find(|l| l.starts_with("| produce MB/s")).unwrap();
        assert_eq!(*mbs, "| produce MB/s | 400 | 200 | - | 2.00 | - |");
        let p99 = lines.iter().find(|l| l.starts_with("| ack p99 µs")).unwrap();
        assert!(p99.contains("| 2000 | 4000 | - | 0.50 | - |"), "{p99}");
        // Every row has the same number of cells.
        let cells = |l: &str| l.matches('|').count();
        assert!(lines.iter().all(|l| cells(l) == cells(lines[0])));
    }

    #[test]
    fn value_formatting() {
        assert_eq!(fmt_value(123456.7), "123457");
        assert_eq!(fmt_value(12.34), "12.3");
        assert_eq!(fmt_value(1.234), "1.23");
        assert_eq!(fmt_value(5.0), "5");
        assert_eq!(fmt_value(f64::NAN), "-");
        assert_eq!(fmt_ratio(Some(1.0), Some(0.0)), "-");
        assert_eq!(fmt_ratio(Some(3.0), Some(2.0)), "1.50");
        assert_eq!(fmt_ratio(None, Some(2.0)), "-");
    }
}
