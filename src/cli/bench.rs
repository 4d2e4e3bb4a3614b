//! `corestream bench run`, `bench compare` and `bench machine`: the command line
//! of the load generator in [`crate::bench`]. Values are parsed there, so
//! every bad input is a one-line error.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

use crate::bench::compare::{self, BrokerSelection, CompareOptions};
use crate::bench::runner::RunOptions;
use crate::bench::workload::{parse_duration, STANDARD_WORKLOADS};
use crate::bench::{self, RunConfig, WorkloadOverrides};

/// `corestream bench ...`
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Run one workload against a broker and print what it measured.
    Run(Box<RunArgs>),
    /// Start corestream and each peer found (Kafka, tansu, --peer), run the
    /// same workloads against each in turn, write <out>/results.md and SVG plots.
    Compare(Box<CompareArgs>),
    /// Measure this machine's own limits (what `bench compare` puts above its
    /// tables): loopback TCP bandwidth, O_DIRECT bandwidth, and the device's
    /// round trip for one 4 KiB write, alone and with fdatasync, in --dir.
    Machine(MachineArgs),
}

/// `corestream bench machine`
#[derive(clap::Args, Debug)]
pub struct MachineArgs {
    /// Directory on the filesystem to test (use the broker's data directory's filesystem).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Write the measurements as JSON to this file too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Workload shape flags (each overrides the chosen workload's value).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WorkloadFlags {
    /// Payload bytes per record (e.g. 1024, 1KiB).
    #[arg(long, value_name = "BYTES")]
    pub message_size: Option<String>,
    /// Partitions of the topic created for the run.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Producer clients (each its own librdkafka instance and connection).
    #[arg(long)]
    pub producers: Option<usize>,
    /// Threads driving the producer clients (default: one per producer).
    #[arg(long)]
    pub producer_threads: Option<usize>,
    /// Consumer threads (each its own client, disjoint partitions).
    #[arg(long)]
    pub consumers: Option<usize>,
    /// Total produce rate: 0 = unthrottled, N msg/s, `25MB/s`, or `half` (50% of a measured max).
    #[arg(long)]
    pub rate: Option<String>,
    /// Producer acks: 0, 1 or all.
    #[arg(long)]
    pub acks: Option<String>,
    /// Keys: none, random or skewed (Zipf-like).
    #[arg(long)]
    pub keys: Option<String>,
    /// Partitioning: client (librdkafka's partitioner) or slice (producer i writes only partitions p with p % producers == i).
    #[arg(long)]
    pub partitioning: Option<String>,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long)]
    pub compression: Option<String>,
    /// Producer linger.ms.
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// Producer batch.size (bytes).
    #[arg(long, value_name = "BYTES")]
    pub batch_size: Option<String>,
    /// Measured duration in seconds (warm-up excluded); e.g. 10, 2.5, 500ms.
    #[arg(long)]
    pub duration: Option<String>,
    /// Warm-up before the measured window (default 2 s, at most duration/5 when --duration is given).
    #[arg(long)]
    pub warmup: Option<String>,
    /// tail (consume while producing) or catch-up (backlog first, then read it).
    #[arg(long)]
    pub consume_mode: Option<String>,
    /// catch-up: backlog bytes per partition (e.g. 32MiB).
    #[arg(long, value_name = "BYTES")]
    pub backlog_per_partition: Option<String>,
}

/// `corestream bench run`
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Bootstrap broker `host:port`.
    #[arg(long = "bootstrap-server", short = 'b', default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
    pub bootstrap: String,
    /// Workload: custom (flags only) or one of the standard ones (see benches/README.md).
    #[arg(long, short = 'w', default_value = "custom")]
    pub workload: String,
    #[command(flatten)]
    pub flags: WorkloadFlags,
    /// Broker process id for CPU accounting (default: the process listening on a loopback port).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Broker label in the output.
    #[arg(long, default_value = "broker")]
    pub broker_name: String,
    /// For `--rate half`: the maximum msg/s (else it is measured first).
    #[arg(long)]
    pub max_msg_per_sec: Option<f64>,
    /// Write everything measured as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Keep the topic after the run (default: delete it).
    #[arg(long)]
    pub keep_topic: bool,
    /// Extra librdkafka property for every client (repeatable), e.g. `-X socket.send.buffer.bytes=1048576`.
    #[arg(long = "property", short = 'X', value_name = "KEY=VALUE", value_parser = super::client::parse_key_value)]
    pub props: Vec<(String, String)>,
}

/// `corestream bench compare`
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Workloads, comma separated, or `all`.
    #[arg(long, short = 'w', default_value = "all")]
    pub workload: String,
    /// Measured duration of every workload (default 10 s).
    #[arg(long)]
    pub duration: Option<String>,
    /// Warm-up of every workload.
    #[arg(long)]
    pub warmup: Option<String>,
    /// Report directory (results.md, results.json, SVGs, broker logs).
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Where the brokers' data directories go (default <out>/data; must allow O_DIRECT).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// corestream binary (default: this executable).
    #[arg(long)]
    pub corestream_bin: Option<PathBuf>,
    /// corestream --cores.
    #[arg(long)]
    pub cores: Option<usize>,
    /// corestream --set KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Apache Kafka distribution directory (default: $KAFKA_HOME).
    #[arg(long)]
    pub kafka_home: Option<PathBuf>,
    /// Kafka: fsync every append (log.flush.interval.messages=1), like corestream's acks=all.
    #[arg(long)]
    pub kafka_fsync: bool,
    /// tansu binary (default: $TANSU_BIN, else `tansu` on PATH).
    #[arg(long)]
    pub tansu_bin: Option<PathBuf>,
    /// tansu --storage-engine URL, or `sqlite` for a sqlite file in its data dir.
    #[arg(long, default_value = "memory://tansu/")]
    pub tansu_storage: String,
    /// Only corestream and --peer brokers (skip Kafka and tansu even if found).
    #[arg(long)]
    pub no_auto_peers: bool,
    /// Another running broker to measure, NAME=host:port (repeatable).
    #[arg(long = "peer", value_name = "NAME=HOST:PORT", value_parser = super::client::parse_key_value)]
    pub peers: Vec<(String, String)>,
    /// Skip the loopback TCP and O_DIRECT measurements.
    #[arg(long)]
    pub skip_machine: bool,
    /// Extra librdkafka property for every client (repeatable).
    #[arg(long = "property", short = 'X', value_name = "KEY=VALUE", value_parser = super::client::parse_key_value)]
    pub props: Vec<(String, String)>,
}

/// Runs a `bench` subcommand.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Run(a) => run_cmd(*a),
        BenchCommand::Compare(a) => compare_cmd(*a),
        BenchCommand::Machine(a) => machine_cmd(a),
    }
}

fn machine_cmd(a: MachineArgs) -> Result<()> {
    let m = bench::machine::measure(&a.dir);
    print!("{}", compare::machine_markdown(&m));
    if let Some(path) = a.json {
        let text = serde_json::to_string_pretty(&m).context("encoding the measurements")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn overrides(f: WorkloadFlags) -> WorkloadOverrides {
    WorkloadOverrides {
        message_size: f.message_size,
        partitions: f.partitions,
        producers: f.producers,
        producer_threads: f.producer_threads,
        consumers: f.consumers,
        rate: f.rate,
        acks: f.acks,
        keys: f.keys,
        partitioning: f.partitioning,
        compression: f.compression,
        linger_ms: f.linger_ms,
        batch_size: f.batch_size,
        duration: f.duration,
        warmup: f.warmup,
        consume_mode: f.consume_mode,
        backlog_per_partition: f.backlog_per_partition,
    }
}

fn run_cmd(a: RunArgs) -> Result<()> {
    if let Some(m) = a.max_msg_per_sec {
        if !m.is_finite() || m <= 0.0 {
            bail!("--max-msg-per-sec must be a positive number");
        }
    }
    let cfg = RunConfig {
        workload: a.workload,
        overrides: overrides(a.flags),
        options: RunOptions {
            bootstrap: a.bootstrap,
            broker_name: a.broker_name,
            broker_pid: a.broker_pid,
            props: a.props,
            measured_max_msg_per_sec: a.max_msg_per_sec,
            keep_topic: a.keep_topic,
        },
        json: a.json,
    };
    bench::run(cfg).map(|_| ())
}

/// Parses `all` or a comma-separated list of standard workload names.
pub fn parse_workload_list(s: &str) -> Result<Vec<String>> {
    if s.trim() == "all" {
        return Ok(STANDARD_WORKLOADS.iter().map(|w| w.to_string()).collect());
    }
    let mut v = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !STANDARD_WORKLOADS.contains(&name) {
            bail!("unknown workload `{name}`: expected all or any of {}", STANDARD_WORKLOADS.join(", "));
        }
        v.push(name.to_string());
    }
    if v.is_empty() {
        bail!("no workload given");
    }
    Ok(v)
}

fn compare_cmd(a: CompareArgs) -> Result<()> {
    let workloads = parse_workload_list(&a.workload)?;
    let duration = a.duration.as_deref().map(parse_duration).transpose()?;
    let warmup = a.warmup.as_deref().map(parse_duration).transpose()?;
    let corestream_bin = match a.corestream_bin {
        Some(p) => p,
        None => std::env::current_exe().context("locate the corestream executable")?,
    };
    if !corestream_bin.is_file() {
        bail!("corestream binary {} not found (run `cargo build --release` first)", corestream_bin.display());
    }
    for (name, addr) in &a.peers {
        if name == "corestream" || name == "kafka" || name == "tansu" || !addr.contains(':') {
            bail!("--peer {name}={addr}: expected a new NAME=host:port");
        }
    }
    let data_root = a.data_root.unwrap_or_else(|| a.out.join("data"));
    let brokers = compare::select_brokers(BrokerSelection {
        corestream_bin,
        cores: a.cores,
        sets: a.sets,
        kafka_home: a.kafka_home,
        kafka_fsync: a.kafka_fsync,
        tansu_bin: a.tansu_bin,
        tansu_storage: a.tansu_storage,
        peers: a.peers,
        auto_peers: !a.no_auto_peers,
    });
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let md = compare::compare(&CompareOptions {
        workloads,
        duration,
        warmup,
        out: a.out,
        data_root,
        brokers,
        props: a.props,
        skip_machine: a.skip_machine,
        command_line,
    })?;
    eprintln!("[bench] report: {}", md.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_lists() {
        assert_eq!(parse_workload_list("all").unwrap().len(), STANDARD_WORKLOADS.len());
        assert_eq!(parse_workload_list("scale, catch-up").unwrap(), vec!["scale", "catch-up"]);
        assert!(parse_workload_list("scale,nope").is_err());
        assert!(parse_workload_list(" , ").is_err());
    }

    #[test]
    fn cli_parses_bench_run_and_compare() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "corestream", "bench", "run", "-b", "127.0.0.1:1", "--workload", "small-records", "--rate", "1000",
            "--duration", "2", "--json", "/tmp/x.json", "-X", "a=b",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Bench(BenchCommand::Run(a)) => {
                assert_eq!(a.workload, "small-records");
                assert_eq!(a.flags.rate.as_deref(), Some("1000"));
                assert_eq!(a.props, vec![("a".to_string(), "b".to_string())]);
            }
            other => panic!("{other:?}"),
        }
        let cli = crate::cli::Cli::try_parse_from([
            "corestream", "bench", "compare", "--workload", "all", "--duration", "5", "--peer", "rp=127.0.0.1:9093",
        ])
        .unwrap();
        assert!(matches!(cli.command, crate::cli::Command::Bench(BenchCommand::Compare(_))));
        let cli = crate::cli::Cli::try_parse_from(["corestream", "bench", "machine", "--dir", "/data"]).unwrap();
        match cli.command {
            crate::cli::Command::Bench(BenchCommand::Machine(a)) => assert_eq!(a.dir, PathBuf::from("/data")),
            other => panic!("{other:?}"),
        }
    }
}
