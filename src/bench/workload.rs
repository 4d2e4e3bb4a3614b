//! Workload descriptions: what a benchmark run does, the standard named
//! workloads, and the pure helpers the drivers use (rate resolution, key
//! distributions, a small deterministic random number generator).
//!
//! Nothing in here does I/O, so all of it is unit-tested below.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

/// Every standard workload name, in the order `compare --workload all` runs
/// them (`latency-half` needs the maximum measured by `max-throughput-acksall`
/// before it).
pub const STANDARD_WORKLOADS: &[&str] = &[
    "max-throughput-acks1",
    "max-throughput-acksall",
    "small-records",
    "catch-up",
    "latency-25mbs",
    "latency-half",
    "scale",
];

/// The workload whose measured produce rate `latency-half` halves.
pub const MAX_REFERENCE_WORKLOAD: &str = "max-throughput-acksall";

/// Default measured duration of a workload.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(10);
/// Default warm-up before the measured window (excluded from every metric).
pub const WARMUP_DEFAULT: Duration = Duration::from_secs(2);
/// Catch-up phases (backlog production, drain) are each bounded by this many
/// times the workload's duration.
pub const CATCH_UP_PHASE_DURATION_FACTOR: u32 = 6;
/// Largest message size accepted (just under the brokers' default
/// `message.max.bytes`, leaving room for the batch header).
pub const MESSAGE_SIZE_MAX: usize = 1_000_000;
/// Largest partition count accepted.
pub const PARTITIONS_MAX: i32 = 100_000;
/// Largest number of producer client instances.
pub const PRODUCERS_MAX: usize = 10_000;
/// Largest number of threads (producer or consumer).
pub const THREADS_MAX: usize = 256;
/// Number of distinct keys for the `random` and `skewed` key distributions.
pub const KEY_SPACE: usize = 10_000;
/// Exponent of the Zipf-like `skewed` key distribution.
pub const ZIPF_EXPONENT: f64 = 1.0;

/// Kafka `acks` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Acks {
    /// Fire and forget.
    Zero,
    /// Leader appended.
    One,
    /// All in-sync replicas (for corestream: on stable storage).
    All,
}

impl Acks {
    /// Parses `0`, `1`, `all` (or `-1`).
    pub fn parse(s: &str) -> Result<Acks> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "0" => Acks::Zero,
            "1" => Acks::One,
            "all" | "-1" => Acks::All,
            other => bail!("invalid acks `{other}`: expected 0, 1 or all"),
        })
    }

    /// The librdkafka `acks` value.
    pub fn as_config(self) -> &'static str {
        match self {
            Acks::Zero => "0",
            Acks::One => "1",
            Acks::All => "all",
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_config())
    }
}

/// How records are keyed (and so, through the client's partitioner, spread
/// over partitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    /// No key: the client's sticky partitioner picks partitions.
    None,
    /// Keys drawn uniformly from [`KEY_SPACE`] keys.
    Random,
    /// Keys drawn from a Zipf-like distribution over [`KEY_SPACE`] keys (a
    /// few hot keys, hence hot partitions).
    Skewed,
}

impl KeyDist {
    /// Parses `none`, `random`, `skewed` (also `zipf`).
    pub fn parse(s: &str) -> Result<KeyDist> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "none" => KeyDist::None,
            "random" | "uniform" => KeyDist::Random,
            "skewed" | "zipf" => KeyDist::Skewed,
            other => bail!("invalid key distribution `{other}`: expected none, random or skewed"),
        })
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyDist::None => "none",
            KeyDist::Random => "random",
            KeyDist::Skewed => "skewed",
        })
    }
}

/// When the consumers read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsumeMode {
    /// Consume while producing (end-to-end latency).
    Tail,
    /// Produce a backlog first, then consume it from the beginning, timed.
    CatchUp,
}

impl ConsumeMode {
    /// Parses `tail` or `catch-up`.
    pub fn parse(s: &str) -> Result<ConsumeMode> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "tail" => ConsumeMode::Tail,
            "catch-up" | "catchup" | "backlog" => ConsumeMode::CatchUp,
            other => bail!("invalid consume mode `{other}`: expected tail or catch-up"),
        })
    }
}

impl fmt::Display for ConsumeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsumeMode::Tail => "tail",
            ConsumeMode::CatchUp => "catch-up",
        })
    }
}

/// Which partition each record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Partitioning {
    /// librdkafka's partitioner: sticky for keyless records, key hash otherwise.
    Client,
    /// Producer client `i` of `n` writes only its own slice of partitions
    /// (see [`partitions_for_producer`]), round robin. Many clients over many
    /// partitions then cost each client only its slice.
    Slice,
}

impl Partitioning {
    /// Parses `client` or `slice`.
    pub fn parse(s: &str) -> Result<Partitioning> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "client" => Partitioning::Client,
            "slice" => Partitioning::Slice,
            other => bail!("invalid partitioning `{other}`: expected client or slice"),
        })
    }
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Partitioning::Client => "client",
            Partitioning::Slice => "slice",
        })
    }
}

/// Partitions producer client `index` of `producers` writes in
/// [`Partitioning::Slice`] mode: `p % producers == index`, or, with more
/// producers than partitions, the one partition `index % partitions`.
pub fn partitions_for_producer(partitions: i32, producers: usize, index: usize) -> Vec<i32> {
    if partitions <= 0 || producers == 0 {
        return Vec::new();
    }
    if producers > partitions as usize {
        return vec![(index % partitions as usize) as i32];
    }
    (0..partitions).filter(|p| (*p as usize) % producers == index).collect()
}

/// Target produce rate (total over all producers).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rate {
    /// As fast as the producers can go.
    Unthrottled,
    /// Messages per second.
    MsgPerSec(f64),
    /// Megabytes (10^6 bytes) of payload per second.
    MbPerSec(f64),
    /// Half of the maximum produce rate measured earlier in the same run.
    HalfOfMax,
}

impl Rate {
    /// Parses `0` (unthrottled), `N` (messages per second), `NMB/s` or
    /// `Nmbs` (megabytes per second) and `half` (50% of the measured max).
    pub fn parse(s: &str) -> Result<Rate> {
        let t = s.trim().to_ascii_lowercase();
        if t == "half" || t == "50%" {
            return Ok(Rate::HalfOfMax);
        }
        let (num, mb) = if let Some(n) = t.strip_suffix("mb/s").or_else(|| t.strip_suffix("mbs")) {
            (n.trim(), true)
        } else if let Some(n) = t.strip_suffix("msg/s") {
            (n.trim(), false)
        } else {
            (t.as_str(), false)
        };
        let v: f64 = match num.parse() {
            Ok(v) => v,
            Err(_) => bail!("invalid rate `{s}`: expected 0, a number of msg/s, N MB/s or `half`"),
        };
        if !v.is_finite() || v < 0.0 {
            bail!("invalid rate `{s}`: must be a non-negative number");
        }
        Ok(if v == 0.0 {
            Rate::Unthrottled
        } else if mb {
            Rate::MbPerSec(v)
        } else {
            Rate::MsgPerSec(v)
        })
    }

    /// The rate in messages per second (None: unthrottled), given the message
    /// size and, for [`Rate::HalfOfMax`], the measured maximum in msg/s.
    pub fn resolve(self, message_size: usize, measured_max_msg_per_sec: Option<f64>) -> Result<Option<f64>> {
        Ok(match self {
            Rate::Unthrottled => None,
            Rate::MsgPerSec(r) => Some(r),
            Rate::MbPerSec(mb) => Some(mb * 1e6 / message_size.max(1) as f64),
            Rate::HalfOfMax => match measured_max_msg_per_sec {
                Some(m) if m > 0.0 => Some(m / 2.0),
                _ => bail!("rate `half` needs a maximum measured first, and none is known"),
            },
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Unthrottled => f.write_str("unthrottled"),
            Rate::MsgPerSec(r) => write!(f, "{r} msg/s"),
            Rate::MbPerSec(r) => write!(f, "{r} MB/s"),
            Rate::HalfOfMax => f.write_str("50% of measured max"),
        }
    }
}

/// Compression codecs librdkafka was built with here.
pub const COMPRESSIONS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];

/// Checks a compression name.
pub fn parse_compression(s: &str) -> Result<String> {
    let t = s.trim().to_ascii_lowercase();
    if COMPRESSIONS.contains(&t.as_str()) {
        Ok(t)
    } else {
        bail!("invalid compression `{s}`: expected one of {}", COMPRESSIONS.join(", "))
    }
}

/// Everything a run does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Workload {
    /// Standard name, or `custom`.
    pub name: String,
    /// Payload bytes per record.
    pub message_size: usize,
    /// Partitions of the topic the run creates.
    pub partitions: i32,
    /// Producer client instances (each its own librdkafka handle and connection).
    pub producers: usize,
    /// Threads driving the producers (each drives `producers / threads` clients).
    pub producer_threads: usize,
    /// Consumer threads, each its own client, each assigned a disjoint set of partitions.
    pub consumers: usize,
    /// Target produce rate.
    pub rate: Rate,
    /// Producer `acks`.
    pub acks: Acks,
    /// Key distribution.
    pub keys: KeyDist,
    /// How records are spread over partitions.
    pub partitioning: Partitioning,
    /// Producer `compression.type`.
    pub compression: String,
    /// Producer `linger.ms`.
    pub linger_ms: u64,
    /// Producer `batch.size` in bytes.
    pub batch_size: u64,
    /// Measured duration (tail mode) or time scale of the phase bounds (catch-up).
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// Excluded warm-up before the measured window (tail mode).
    #[serde(serialize_with = "ser_secs")]
    pub warmup: Duration,
    /// Tail or catch-up.
    pub consume_mode: ConsumeMode,
    /// Catch-up: backlog bytes to produce per partition before consuming.
    pub backlog_bytes_per_partition: u64,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: "custom".into(),
            message_size: 1024,
            partitions: 16,
            producers: 1,
            producer_threads: 1,
            consumers: 1,
            rate: Rate::Unthrottled,
            acks: Acks::One,
            keys: KeyDist::None,
            partitioning: Partitioning::Client,
            compression: "none".into(),
            linger_ms: 5,
            batch_size: 1_048_576,
            duration: DURATION_DEFAULT,
            warmup: WARMUP_DEFAULT,
            consume_mode: ConsumeMode::Tail,
            backlog_bytes_per_partition: 32 * 1024 * 1024,
        }
    }
}

impl Workload {
    /// The standard workload called `name` (see [`STANDARD_WORKLOADS`]).
    pub fn standard(name: &str) -> Result<Workload> {
        let base = Workload { name: name.to_string(), ..Workload::default() };
        Ok(match name {
            "max-throughput-acks1" => Workload { acks: Acks::One, ..base },
            "max-throughput-acksall" => Workload { acks: Acks::All, ..base },
            "small-records" => Workload { message_size: 100, acks: Acks::One, ..base },
            "catch-up" => Workload {
                acks: Acks::One,
                consume_mode: ConsumeMode::CatchUp,
                backlog_bytes_per_partition: 32 * 1024 * 1024,
                ..base
            },
            "latency-25mbs" => Workload { rate: Rate::MbPerSec(25.0), acks: Acks::All, linger_ms: 0, ..base },
            "latency-half" => Workload { rate: Rate::HalfOfMax, acks: Acks::All, linger_ms: 0, ..base },
            "scale" => Workload {
                partitions: 1000,
                producers: 200,
                producer_threads: 4,
                consumers: 4,
                partitioning: Partitioning::Slice,
                rate: Rate::MbPerSec(20.0),
                acks: Acks::One,
                ..base
            },
            "custom" => base,
            other => bail!(
                "unknown workload `{other}`: expected one of {} (or `custom`)",
                STANDARD_WORKLOADS.join(", ")
            ),
        })
    }

    /// One line describing the workload, for reports.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} B records, {} partitions, {} producer(s) on {} thread(s), {} consumer(s), rate {}, acks={}, keys={}, partitioning={}, compression={}, linger.ms={}, batch.size={}, {}",
            self.message_size,
            self.partitions,
            self.producers,
            self.producer_threads,
            self.consumers,
            self.rate,
            self.acks,
            self.keys,
            self.partitioning,
            self.compression,
            self.linger_ms,
            self.batch_size,
            self.consume_mode,
        );
        match self.consume_mode {
            ConsumeMode::Tail => s.push_str(&format!(
                ", {} s measured after {} s warm-up",
                self.duration.as_secs_f64(),
                self.warmup.as_secs_f64()
            )),
            ConsumeMode::CatchUp => s.push_str(&format!(
                ", backlog {} MiB per partition",
                self.backlog_bytes_per_partition / (1024 * 1024)
            )),
        }
        s
    }

    /// Checks the bounds; every CLI-provided value passes through here.
    pub fn validate(&self) -> Result<()> {
        if self.message_size == 0 || self.message_size > MESSAGE_SIZE_MAX {
            bail!("message size must be between 1 and {MESSAGE_SIZE_MAX} bytes, got {}", self.message_size);
        }
        if self.partitions < 1 || self.partitions > PARTITIONS_MAX {
            bail!("partitions must be between 1 and {PARTITIONS_MAX}, got {}", self.partitions);
        }
        if self.producers == 0 || self.producers > PRODUCERS_MAX {
            bail!("producers must be between 1 and {PRODUCERS_MAX}, got {}", self.producers);
        }
        if self.producer_threads == 0 || self.producer_threads > THREADS_MAX {
            bail!("producer threads must be between 1 and {THREADS_MAX}, got {}", self.producer_threads);
        }
        if self.consumers > THREADS_MAX {
            bail!("consumers must be at most {THREADS_MAX}, got {}", self.consumers);
        }
        if self.consume_mode == ConsumeMode::CatchUp && self.consumers == 0 {
            bail!("catch-up mode needs at least one consumer");
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(24 * 3600) {
            bail!("duration must be between 1 ms and 24 h");
        }
        if self.warmup > Duration::from_secs(3600) {
            bail!("warm-up must be at most 1 h");
        }
        if self.linger_ms > 900_000 {
            bail!("linger.ms must be at most 900000");
        }
        if self.batch_size == 0 || self.batch_size > 2_147_483_647 {
            bail!("batch.size must be between 1 and 2147483647");
        }
        if self.consume_mode == ConsumeMode::CatchUp && self.backlog_bytes_per_partition == 0 {
            bail!("catch-up backlog must be at least 1 byte per partition");
        }
        parse_compression(&self.compression)?;
        Ok(())
    }

    /// Consumers actually started: never more than partitions.
    pub fn effective_consumers(&self) -> usize {
        self.consumers.min(self.partitions.max(0) as usize)
    }

    /// Producer threads actually started: never more than producers.
    pub fn effective_producer_threads(&self) -> usize {
        self.producer_threads.min(self.producers).max(1)
    }
}

/// Partitions assigned to consumer `index` of `consumers`: round robin, so
/// the sets are disjoint and cover every partition.
pub fn partitions_for_consumer(partitions: i32, consumers: usize, index: usize) -> Vec<i32> {
    if consumers == 0 {
        return Vec::new();
    }
    (0..partitions).filter(|p| (*p as usize) % consumers == index).collect()
}

/// Producer client indexes driven by thread `index` of `threads`.
pub fn producers_for_thread(producers: usize, threads: usize, index: usize) -> Vec<usize> {
    if threads == 0 {
        return Vec::new();
    }
    (0..producers).filter(|p| p % threads == index).collect()
}

/// Parses a duration in seconds (fractions allowed): `10`, `2.5`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim().to_ascii_lowercase();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t.as_str(), 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale <= 7.0 * 86400.0 => Ok(Duration::from_secs_f64(v * scale)),
        _ => bail!("invalid duration `{s}`: expected seconds, e.g. 10, 2.5, 500ms, 1m"),
    }
}

/// Parses a byte size: `1024`, `32KiB`, `32MiB`, `1GiB`, `10KB`, `1MB`.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let units: &[(&str, u64)] = &[
        ("kib", 1 << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("kb", 1_000),
        ("mb", 1_000_000),
        ("gb", 1_000_000_000),
        ("k", 1 << 10),
        ("m", 1 << 20),
        ("g", 1 << 30),
        ("b", 1),
    ];
    for (suffix, mult) in units {
        if let Some(n) = t.strip_suffix(suffix) {
            return match n.trim().parse::<u64>() {
                Ok(v) => v.checked_mul(*mult).ok_or_else(|| anyhow::anyhow!("size `{s}` is too large")),
                Err(_) => bail!("invalid size `{s}`: expected e.g. 1024, 32KiB, 32MiB"),
            };
        }
    }
    match t.parse::<u64>() {
        Ok(v) => Ok(v),
        Err(_) => bail!("invalid size `{s}`: expected e.g. 1024, 32KiB, 32MiB"),
    }
}

// ---------------------------------------------------------------------------
// Randomness and keys
// ---------------------------------------------------------------------------

pub use crate::util::SplitMix64;

/// Draws key indexes in `0..n` from a distribution.
#[derive(Clone, Debug)]
pub struct KeyGen {
    dist: KeyDist,
    n: usize,
    /// Skewed: cumulative weights, cdf[i] = P(index <= i).
    cdf: Vec<f64>,
}

impl KeyGen {
    /// A generator over `n` keys (`n` >= 1) with Zipf exponent `s` for `skewed`.
    pub fn new(dist: KeyDist, n: usize, s: f64) -> Self {
        let n = n.max(1);
        let cdf = if dist == KeyDist::Skewed {
            let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            let mut cdf: Vec<f64> = weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect();
            if let Some(last) = cdf.last_mut() {
                *last = 1.0;
            }
            cdf
        } else {
            Vec::new()
        };
        KeyGen { dist, n, cdf }
    }

    /// The next key index, or None for [`KeyDist::None`].
    pub fn next_index(&self, rng: &mut SplitMix64) -> Option<usize> {
        match self.dist {
            KeyDist::None => None,
            KeyDist::Random => Some((rng.next_u64() % self.n as u64) as usize),
            KeyDist::Skewed => {
                let u = rng.next_f64();
                let i = self.cdf.partition_point(|c| *c <= u);
                Some(i.min(self.n - 1))
            }
        }
    }

    /// The key bytes for an index (`key-000042`).
    pub fn key_bytes(index: usize) -> Vec<u8> {
        format!("key-{index:06}").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_workloads_parse_and_validate() {
        for name in STANDARD_WORKLOADS {
            let w = Workload::standard(name).unwrap();
            assert_eq!(w.name, *name);
            w.validate().unwrap();
        }
        assert!(Workload::standard("nope").is_err());
        let s = Workload::standard("scale").unwrap();
        assert_eq!((s.partitions, s.producers, s.producer_threads), (1000, 200, 4));
        let c = Workload::standard("catch-up").unwrap();
        assert_eq!(c.consume_mode, ConsumeMode::CatchUp);
        // The backlog must exceed the 8 MiB per-partition tail cache.
        assert!(c.backlog_bytes_per_partition > 8 * 1024 * 1024);
        let l = Workload::standard("latency-25mbs").unwrap();
        assert_eq!((l.acks, l.linger_ms), (Acks::All, 0));
        assert_eq!(Workload::standard("small-records").unwrap().message_size, 100);
        assert_eq!(Workload::standard("max-throughput-acksall").unwrap().acks, Acks::All);
    }

    #[test]
    fn max_reference_runs_before_latency_half() {
        let pos = |n: &str| STANDARD_WORKLOADS.iter().position(|w| *w == n).unwrap();
        assert!(pos(MAX_REFERENCE_WORKLOAD) < pos("latency-half"));
    }

    #[test]
    fn validation_rejects_bad_values() {
        let ok = Workload::default();
        ok.validate().unwrap();
        assert!(Workload { message_size: 0, ..ok.clone() }.validate().is_err());
        assert!(Workload { message_size: MESSAGE_SIZE_MAX + 1, ..ok.clone() }.validate().is_err());
        assert!(Workload { partitions: 0, ..ok.clone() }.validate().is_err());
        assert!(Workload { producers: 0, ..ok.clone() }.validate().is_err());
        assert!(Workload { producer_threads: 0, ..ok.clone() }.validate().is_err());
        assert!(Workload { duration: Duration::ZERO, ..ok.clone() }.validate().is_err());
        assert!(Workload { compression: "brotli".into(), ..ok.clone() }.validate().is_err());
        assert!(Workload { consume_mode: ConsumeMode::CatchUp, consumers: 0, ..ok.clone() }
            .validate()
            .is_err());
    }

    #[test]
    fn enums_parse() {
        assert_eq!(Acks::parse("0").unwrap(), Acks::Zero);
        assert_eq!(Acks::parse("1").unwrap(), Acks::One);
        assert_eq!(Acks::parse("ALL").unwrap(), Acks::All);
        assert_eq!(Acks::parse("-1").unwrap(), Acks::All);
        assert!(Acks::parse("2").is_err());
        assert_eq!(KeyDist::parse("skewed").unwrap(), KeyDist::Skewed);
        assert_eq!(KeyDist::parse("zipf").unwrap(), KeyDist::Skewed);
        assert_eq!(KeyDist::parse("random").unwrap(), KeyDist::Random);
        assert_eq!(KeyDist::parse("none").unwrap(), KeyDist::None);
        assert!(KeyDist::parse("x").is_err());
        assert_eq!(ConsumeMode::parse("catch-up").unwrap(), ConsumeMode::CatchUp);
        assert_eq!(ConsumeMode::parse("tail").unwrap(), ConsumeMode::Tail);
        assert!(ConsumeMode::parse("head").is_err());
        assert_eq!(parse_compression("ZSTD").unwrap(), "zstd");
        assert!(parse_compression("brotli").is_err());
    }

    #[test]
    fn rates_parse_and_resolve() {
        assert_eq!(Rate::parse("0").unwrap(), Rate::Unthrottled);
        assert_eq!(Rate::parse("25000").unwrap(), Rate::MsgPerSec(25000.0));
        assert_eq!(Rate::parse("25MB/s").unwrap(), Rate::MbPerSec(25.0));
        assert_eq!(Rate::parse("25mbs").unwrap(), Rate::MbPerSec(25.0));
        assert_eq!(Rate::parse("half").unwrap(), Rate::HalfOfMax);
        assert!(Rate::parse("-1").is_err());
        assert!(Rate::parse("fast").is_err());
        assert!(Rate::parse("NaN").is_err());
        assert_eq!(Rate::Unthrottled.resolve(1024, None).unwrap(), None);
        let r = Rate::MbPerSec(25.0).resolve(1000, None).unwrap().unwrap();
        assert!((r - 25_000.0).abs() < 1e-9);
        assert_eq!(Rate::HalfOfMax.resolve(1024, Some(1000.0)).unwrap(), Some(500.0));
        assert!(Rate::HalfOfMax.resolve(1024, None).is_err());
        assert!(Rate::HalfOfMax.resolve(1024, Some(0.0)).is_err());
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e300").is_err());
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("10KB").unwrap(), 10_000);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
    }

    #[test]
    fn consumer_assignment_is_disjoint_and_complete() {
        for consumers in 1..6 {
            let mut seen = vec![0u32; 16];
            for i in 0..consumers {
                for p in partitions_for_consumer(16, consumers, i) {
                    seen[p as usize] += 1;
                }
            }
            assert!(seen.iter().all(|c| *c == 1), "{consumers}: {seen:?}");
        }
        assert!(partitions_for_consumer(4, 0, 0).is_empty());
        let w = Workload { consumers: 40, partitions: 16, ..Workload::default() };
        assert_eq!(w.effective_consumers(), 16);
    }

    #[test]
    fn producer_slices_cover_every_partition() {
        let mut seen = vec![0u32; 1000];
        for i in 0..200 {
            let ps = partitions_for_producer(1000, 200, i);
            assert_eq!(ps.len(), 5);
            for p in ps {
                seen[p as usize] += 1;
            }
        }
        assert!(seen.iter().all(|c| *c == 1));
        assert_eq!(partitions_for_producer(4, 10, 7), vec![3]);
        assert!(partitions_for_producer(0, 10, 7).is_empty());
        assert_eq!(Partitioning::parse("slice").unwrap(), Partitioning::Slice);
        assert_eq!(Partitioning::parse("client").unwrap(), Partitioning::Client);
        assert!(Partitioning::parse("x").is_err());
        assert_eq!(Workload::standard("scale").unwrap().partitioning, Partitioning::Slice);
    }

    #[test]
    fn producer_threads_split_clients() {
        let all: Vec<usize> = (0..4).flat_map(|t| producers_for_thread(200, 4, t)).collect();
        assert_eq!(all.len(), 200);
        assert_eq!(producers_for_thread(200, 4, 0).len(), 50);
        let w = Workload { producers: 2, producer_threads: 8, ..Workload::default() };
        assert_eq!(w.effective_producer_threads(), 2);
    }

    #[test]
    fn random_keys_are_roughly_uniform() {
        let g = KeyGen::new(KeyDist::Random, 10, ZIPF_EXPONENT);
        let mut rng = SplitMix64::new(7);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[g.next_index(&mut rng).unwrap()] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn skewed_keys_favour_the_first_keys() {
        let g = KeyGen::new(KeyDist::Skewed, KEY_SPACE, ZIPF_EXPONENT);
        let mut rng = SplitMix64::new(42);
        let mut counts = vec![0u32; KEY_SPACE];
        let draws = 200_000;
        for _ in 0..draws {
            let i = g.next_index(&mut rng).unwrap();
            assert!(i < KEY_SPACE);
            counts[i] += 1;
        }
        // Zipf(s=1) over 10k keys: P(key 0) = 1/H(10000) ~ 0.102.
        let p0 = counts[0] as f64 / draws as f64;
        assert!((0.09..0.115).contains(&p0), "p0 = {p0}");
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
        // The top 1% of keys take far more than 1% of the draws.
        let top: u32 = counts[..100].iter().sum();
        assert!(top as f64 / draws as f64 > 0.5);
        assert_eq!(KeyGen::new(KeyDist::None, 10, 1.0).next_index(&mut rng), None);
    }

    #[test]
    fn splitmix_is_deterministic_and_fills() {
        let mut a = SplitMix64::new(1);
        let mut b = SplitMix64::new(1);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut buf = [0u8; 13];
        a.fill(&mut buf);
        assert!(buf.iter().any(|b| *b != 0));
        let f = a.next_f64();
        assert!((0.0..1.0).contains(&f));
        assert_eq!(KeyGen::key_bytes(42), b"key-000042".to_vec());
    }
}
