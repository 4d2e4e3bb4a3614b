//! `corestream bench`: an OpenMessaging-Benchmark-style load generator built
//! on librdkafka (the `rdkafka` crate, no tokio: `BaseProducer` /
//! `BaseConsumer` on plain threads), usable against any Kafka-compatible
//! broker, and a side-by-side comparison of corestream with its peers.
//!
//! - [`workload`]: what a run does (sizes, partitions, clients, rate, acks,
//!   keys, compression, batching, duration, tail or catch-up) and the
//!   standard named workloads; pure parsing and key distributions.
//! - [`runner`]: drives one workload against a broker and measures produce
//!   and consume throughput, produce-ack and end-to-end latency
//!   (`histogram::Histogram`), and the broker's CPU time (`/proc`).
//! - [`report`]: the result record (JSON), the human summary, comparison tables.
//! - [`svg`]: hand-written SVG bar charts.
//! - [`procstat`]: `/proc/<pid>/stat` CPU times and finding a port's listener.
//! - [`machine`]: the machine's own limits (loopback TCP, O_DIRECT disk).
//! - [`brokers`]: starting / stopping corestream, Apache Kafka (KRaft), tansu.
//! - [`compare`]: the comparison run and its report (`results.md`, SVGs).
//!
//! The command line lives in [`crate::cli::bench`]; `benches/README.md`
//! documents the workloads and commands.

pub mod brokers;
pub mod compare;
pub mod machine;
pub mod procstat;
pub mod report;
pub mod runner;
pub mod svg;
pub mod workload;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde::Serialize;

use report::RunResult;
use runner::RunOptions;
use workload::{
    parse_bytes, parse_compression, parse_duration, Acks, ConsumeMode, KeyDist, Rate, Workload, MAX_REFERENCE_WORKLOAD,
};

/// Per-flag overrides of a workload, as given on the command line (strings
/// are parsed here so that every error is one line).
#[derive(Clone, Debug, Default)]
pub struct WorkloadOverrides {
    /// `--message-size`.
    pub message_size: Option<String>,
    /// `--partitions`.
    pub partitions: Option<i32>,
    /// `--producers`.
    pub producers: Option<usize>,
    /// `--producer-threads`.
    pub producer_threads: Option<usize>,
    /// `--consumers`.
    pub consumers: Option<usize>,
    /// `--rate`.
    pub rate: Option<String>,
    /// `--acks`.
    pub acks: Option<String>,
    /// `--keys`.
    pub keys: Option<String>,
    /// `--partitioning`.
    pub partitioning: Option<String>,
    /// `--compression`.
    pub compression: Option<String>,
    /// `--linger-ms`.
    pub linger_ms: Option<u64>,
    /// `--batch-size`.
    pub batch_size: Option<String>,
    /// `--duration`.
    pub duration: Option<String>,
    /// `--warmup`.
    pub warmup: Option<String>,
    /// `--consume-mode`.
    pub consume_mode: Option<String>,
    /// `--backlog-per-partition`.
    pub backlog_per_partition: Option<String>,
}

impl WorkloadOverrides {
    /// The named workload with these overrides applied, validated.
    pub fn apply(&self, name: &str) -> Result<Workload> {
        let mut w = Workload::standard(name)?;
        if let Some(s) = &self.message_size {
            w.message_size = usize::try_from(parse_bytes(s)?).context("message size too large")?;
        }
        if let Some(p) = self.partitions {
            w.partitions = p;
        }
        if let Some(p) = self.producers {
            w.producers = p;
            // One thread per producer unless the workload bounds it (scale)
            // or --producer-threads says otherwise.
            if self.producer_threads.is_none() && name != "scale" {
                w.producer_threads = p.min(workload::THREADS_MAX);
            }
        }
        if let Some(t) = self.producer_threads {
            w.producer_threads = t;
        }
        if let Some(c) = self.consumers {
            w.consumers = c;
        }
        if let Some(r) = &self.rate {
            w.rate = Rate::parse(r)?;
        }
        if let Some(a) = &self.acks {
            w.acks = Acks::parse(a)?;
        }
        if let Some(k) = &self.keys {
            w.keys = KeyDist::parse(k)?;
        }
        if let Some(p) = &self.partitioning {
            w.partitioning = workload::Partitioning::parse(p)?;
        }
        if let Some(c) = &self.compression {
            w.compression = parse_compression(c)?;
        }
        if let Some(l) = self.linger_ms {
            w.linger_ms = l;
        }
        if let Some(b) = &self.batch_size {
            w.batch_size = parse_bytes(b)?;
        }
        if let Some(d) = &self.duration {
            w.duration = parse_duration(d)?;
            if self.warmup.is_none() {
                w.warmup = w.warmup.min((w.duration / 5).max(std::time::Duration::from_secs(1)));
            }
        }
        if let Some(d) = &self.warmup {
            w.warmup = parse_duration(d)?;
        }
        if let Some(m) = &self.consume_mode {
            w.consume_mode = ConsumeMode::parse(m)?;
        }
        if let Some(b) = &self.backlog_per_partition {
            w.backlog_bytes_per_partition = parse_bytes(b)?;
        }
        w.validate()?;
        Ok(w)
    }
}

/// What `bench run` does.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// Workload name (standard or `custom`).
    pub workload: String,
    /// Flag overrides.
    pub overrides: WorkloadOverrides,
    /// Broker and accounting.
    pub options: RunOptions,
    /// `--json FILE`.
    pub json: Option<PathBuf>,
}

/// The JSON record `bench run --json` writes.
#[derive(Serialize)]
struct RunRecord<'a> {
    /// librdkafka version.
    librdkafka: String,
    /// Results in run order (a `latency-half` run without a known maximum
    /// first measures `max-throughput-acksall`).
    results: &'a [RunResult],
}

/// `bench run`: one workload, summary on stdout, optional JSON.
pub fn run(cfg: RunConfig) -> Result<Vec<RunResult>> {
    let w = cfg.overrides.apply(&cfg.workload)?;
    let mut opts = cfg.options.clone();
    if opts.broker_pid.is_none() {
        opts.broker_pid = local_port(&opts.bootstrap).and_then(|p| procstat::find_listener_pid(p).ok());
    }
    let mut results = Vec::new();
    if w.rate == Rate::HalfOfMax && opts.measured_max_msg_per_sec.is_none() {
        // Measure the maximum first, with the same shape.
        let mut probe = cfg.overrides.clone();
        probe.rate = None;
        probe.acks = probe.acks.or(Some("all".into()));
        let pw = probe.apply(MAX_REFERENCE_WORKLOAD)?;
        let pw = Workload { message_size: w.message_size, partitions: w.partitions, ..pw };
        eprintln!("[bench] measuring the maximum first ({MAX_REFERENCE_WORKLOAD})");
        let r = runner::run_workload(&pw, &opts)?;
        println!("{}", report::human_summary(&r));
        opts.measured_max_msg_per_sec = Some(r.produce.msg_per_sec);
        results.push(r);
    }
    let r = runner::run_workload(&w, &opts)?;
    println!("{}", report::human_summary(&r));
    results.push(r);
    if let Some(path) = &cfg.json {
        let rec = RunRecord { librdkafka: rdkafka::util::get_rdkafka_version().1, results: &results };
        let text = serde_json::to_string_pretty(&rec).context("serialize results")?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(results)
}

/// The port of a loopback `host:port` bootstrap address (first of a list).
pub fn local_port(bootstrap: &str) -> Option<u16> {
    let first = bootstrap.split(',').next()?.trim();
    let (host, port) = first.rsplit_once(':')?;
    let local = host.starts_with("127.") || host == "localhost" || host == "[::1]";
    if local {
        port.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn overrides_apply_and_validate() {
        let o = WorkloadOverrides {
            message_size: Some("100".into()),
            partitions: Some(4),
            producers: Some(3),
            rate: Some("10MB/s".into()),
            acks: Some("0".into()),
            keys: Some("skewed".into()),
            compression: Some("zstd".into()),
            linger_ms: Some(1),
            batch_size: Some("64KiB".into()),
            duration: Some("5".into()),
            consume_mode: Some("catch-up".into()),
            backlog_per_partition: Some("1MiB".into()),
            ..WorkloadOverrides::default()
        };
        let w = o.apply("custom").unwrap();
        assert_eq!(w.message_size, 100);
        assert_eq!(w.partitions, 4);
        assert_eq!((w.producers, w.producer_threads), (3, 3));
        assert_eq!(w.rate, Rate::MbPerSec(10.0));
        assert_eq!(w.acks, Acks::Zero);
        assert_eq!(w.keys, KeyDist::Skewed);
        assert_eq!(w.compression, "zstd");
        assert_eq!(w.batch_size, 65536);
        assert_eq!(w.duration, Duration::from_secs(5));
        assert_eq!(w.warmup, Duration::from_secs(1));
        assert_eq!(w.consume_mode, ConsumeMode::CatchUp);
        assert_eq!(w.backlog_bytes_per_partition, 1 << 20);
        // scale keeps its bounded thread count when producers change.
        let s = WorkloadOverrides { producers: Some(100), ..Default::default() }.apply("scale").unwrap();
        assert_eq!((s.producers, s.producer_threads), (100, 4));
        for bad in [
            WorkloadOverrides { acks: Some("2".into()), ..Default::default() },
            WorkloadOverrides { message_size: Some("0".into()), ..Default::default() },
            WorkloadOverrides { duration: Some("x".into()), ..Default::default() },
            WorkloadOverrides { partitions: Some(-1), ..Default::default() },
        ] {
            assert!(bad.apply("custom").is_err(), "{bad:?}");
        }
        assert!(WorkloadOverrides::default().apply("nope").is_err());
    }

    #[test]
    fn local_ports() {
        assert_eq!(local_port("127.0.0.1:9092"), Some(9092));
        assert_eq!(local_port("localhost:19092,other:1"), Some(19092));
        assert_eq!(local_port("kafka.example:9092"), None);
        assert_eq!(local_port("nonsense"), None);
    }
}
