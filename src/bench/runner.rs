//! The load driver: runs one [`Workload`] against a broker with librdkafka
//! (`BaseProducer` / `BaseConsumer` on plain threads) and measures it.
//!
//! Shape of a tail-mode run:
//! 1. create a fresh topic (unique name) and wait until metadata shows it;
//! 2. start the consumer threads (each its own client, assigned a disjoint
//!    set of partitions from the beginning) and the producer threads (each
//!    driving one or more producer clients), and wait until all clients are
//!    up (a barrier);
//! 3. warm-up, then the measured window: the broker's and our own CPU time
//!    are sampled at both ends (`/proc/<pid>/stat`);
//! 4. stop producing, flush (bounded), let the consumers drain what was
//!    acknowledged (bounded), delete the topic.
//!
//! Catch-up mode instead produces a backlog (partitions x backlog bytes),
//! and only then starts the consumers from the beginning and times the drain.
//!
//! Clocks: every timestamp is `CLOCK_MONOTONIC` nanoseconds, which is one
//! clock for all processes of the machine. The producer writes it into the
//! first 8 bytes of each payload (the rest is random bytes, so compression
//! gains nothing), and the consumer subtracts it from its own reading for the
//! end-to-end latency. Produce-ack latency is send() to the delivery
//! callback; delivery callbacks run inside `poll()` on the producing thread,
//! which polls after every few sends and then serves every report waiting, so
//! they include at most that delay.
//! Only records *sent* inside the measured window count for latencies; only
//! acknowledgements / receipts *inside* the window count for throughput.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use histogram::{AtomicHistogram, Histogram};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use super::procstat;
use super::report::{
    latency_histogram, BrokerCpu, CatchUp, LatencySummary, RunResult, Throughput, LATENCY_GROUPING_POWER,
    LATENCY_MAX_VALUE_POWER,
};
use super::workload::{
    partitions_for_consumer, partitions_for_producer, producers_for_thread, ConsumeMode, KeyGen, Partitioning,
    SplitMix64, Workload, KEY_SPACE, ZIPF_EXPONENT,
};

/// Bound on topic creation plus its appearance in metadata.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on flushing each producer thread's clients after the window.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(20);
/// Shortest drain allowed to tail consumers after producing stops.
const DRAIN_TIMEOUT_MIN: Duration = Duration::from_secs(10);
/// Bound on creating all clients (the start barrier).
const CLIENTS_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages sent between two polls of a producer client when unthrottled.
const SENDS_PER_POLL: u64 = 256;
/// A thread driving several producer clients polls all of them at most
/// this often (each poll is a librdkafka call; 50 clients polled every
/// 200 µs would cost more CPU than the sends).
const POLL_SWEEP_INTERVAL_NS: u64 = 1_000_000;
/// Longest sleep of a throttled producer thread between checks.
const THROTTLE_SLEEP_MAX: Duration = Duration::from_millis(1);
/// Bytes of the payload holding the send timestamp.
const STAMP_BYTES: usize = 8;
/// librdkafka `message.timeout.ms` for the benchmark producers.
const MESSAGE_TIMEOUT_MS: &str = "30000";

/// How to reach and account the broker.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Bootstrap address.
    pub bootstrap: String,
    /// Label for reports.
    pub broker_name: String,
    /// Broker process for CPU accounting.
    pub broker_pid: Option<u32>,
    /// Extra librdkafka properties for every client.
    pub props: Vec<(String, String)>,
    /// Maximum produce msg/s measured earlier (for `latency-half`).
    pub measured_max_msg_per_sec: Option<f64>,
    /// Keep the topic after the run (default: delete it).
    pub keep_topic: bool,
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn sleep_until_ns(t: u64) {
    let now = mono_ns();
    if t > now {
        std::thread::sleep(Duration::from_nanos(t - now));
    }
}

// ---------------------------------------------------------------------------
// Shared run state
// ---------------------------------------------------------------------------

/// State shared by the driver, producer and consumer threads.
struct Shared {
    /// Measured window [start, end) in mono ns (end = u64::MAX until known).
    window_start_ns: AtomicU64,
    window_end_ns: AtomicU64,
    /// Producers stop sending.
    stop: AtomicBool,
    /// Successful acknowledgements over the whole run.
    acked_total: AtomicU64,
    /// Records consumed over the whole run.
    consumed_total: AtomicU64,
    /// Producers have flushed and exited.
    producers_done: AtomicBool,
    /// Consumers give up at this mono ns.
    drain_deadline_ns: AtomicU64,
    /// Catch-up: stop producing after this many records have been sent.
    send_limit: u64,
    /// Records sent (handed to librdkafka) over the whole run.
    sent_total: AtomicU64,
    /// Catch-up: mono ns of the last record read.
    last_receipt_ns: AtomicU64,
}

impl Shared {
    fn in_window(&self, t: u64) -> bool {
        t >= self.window_start_ns.load(Ordering::Relaxed) && t < self.window_end_ns.load(Ordering::Relaxed)
    }
}

/// Latency accumulator usable from callbacks (atomic).
struct LatencyAcc {
    hist: AtomicHistogram,
    max_us: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyAcc {
    fn new() -> Self {
        LatencyAcc {
            // Valid constants, see report::latency_histogram.
            hist: AtomicHistogram::new(LATENCY_GROUPING_POWER, LATENCY_MAX_VALUE_POWER)
                .expect("valid histogram parameters"),
            max_us: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    fn record(&self, us: u64) {
        let us = us.min((1u64 << LATENCY_MAX_VALUE_POWER) - 1);
        let _ = self.hist.increment(us);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// A merged latency distribution.
struct LatencyTotal {
    hist: Histogram,
    max_us: u64,
    sum_us: u128,
}

impl LatencyTotal {
    fn new() -> Self {
        LatencyTotal { hist: latency_histogram(), max_us: 0, sum_us: 0 }
    }

    fn add(&mut self, h: &Histogram, max_us: u64, sum_us: u128) {
        if let Ok(m) = self.hist.checked_add(h) {
            self.hist = m;
        }
        self.max_us = self.max_us.max(max_us);
        self.sum_us += sum_us;
    }

    fn summary(&self) -> Option<LatencySummary> {
        LatencySummary::from_histogram(&self.hist, self.max_us, self.sum_us)
    }
}

// ---------------------------------------------------------------------------
// librdkafka contexts
// ---------------------------------------------------------------------------

/// Context of every benchmark client: librdkafka logs go to `tracing` at
/// debug level; the last error is kept for messages.
#[derive(Default)]
struct BenchContext {
    last_error: Mutex<Option<String>>,
}

impl ClientContext for BenchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(target: "librdkafka", ?level, "{fac} {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", "error: {error}: {reason}");
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(if reason.is_empty() { error.to_string() } else { reason.to_string() });
        }
    }
}

impl ConsumerContext for BenchContext {}

/// Per producer thread statistics, fed by delivery callbacks.
struct ProduceStats {
    shared: Arc<Shared>,
    message_size: u64,
    ack: LatencyAcc,
    acked_window: AtomicU64,
    acked_all: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    last_ack_ns: AtomicU64,
}

struct ProducerCtx {
    base: BenchContext,
    stats: Arc<ProduceStats>,
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.base.log(level, fac, log_message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason)
    }
}

impl ProducerContext for ProducerCtx {
    /// Send time, mono ns.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = mono_ns();
        let st = &self.stats;
        match result {
            Ok(_) => {
                st.shared.acked_total.fetch_add(1, Ordering::Relaxed);
                st.acked_all.fetch_add(1, Ordering::Relaxed);
                st.last_ack_ns.fetch_max(now, Ordering::Relaxed);
                if st.shared.in_window(now) {
                    st.acked_window.fetch_add(1, Ordering::Relaxed);
                }
                let sent = sent_ns as u64;
                if st.shared.in_window(sent) {
                    st.ack.record(now.saturating_sub(sent) / 1000);
                }
            }
            Err((e, _)) => {
                st.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = st.first_error.lock() {
                    g.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Client configuration
// ---------------------------------------------------------------------------

fn base_config(opts: &RunOptions, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &opts.bootstrap)
        .set("client.id", client_id)
        .set("socket.timeout.ms", "15000")
        .set_log_level(RDKafkaLogLevel::Error);
    if opts.bootstrap.starts_with("127.") || opts.bootstrap.starts_with("localhost") {
        c.set("broker.address.family", "v4");
    }
    c
}

fn apply_props(c: &mut ClientConfig, opts: &RunOptions) {
    for (k, v) in &opts.props {
        c.set(k, v);
    }
}

fn producer_config(w: &Workload, opts: &RunOptions) -> ClientConfig {
    let mut c = base_config(opts, "corestream-bench-producer");
    c.set("acks", w.acks.as_config())
        .set("enable.idempotence", "false")
        .set("compression.type", &w.compression)
        .set("linger.ms", w.linger_ms.to_string())
        .set("batch.size", w.batch_size.to_string())
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
        .set("request.timeout.ms", "15000");
    apply_props(&mut c, opts);
    c
}

fn consumer_config(opts: &RunOptions) -> ClientConfig {
    let mut c = base_config(opts, "corestream-bench-consumer");
    let group = format!("corestream-bench-{}-{:x}", std::process::id(), mono_ns());
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    apply_props(&mut c, opts);
    c
}

/// Creates `topic` and waits (bounded) until a fresh client's metadata shows
/// all of its partitions.
pub fn create_topic(opts: &RunOptions, topic: &str, partitions: i32) -> Result<()> {
    let mut cfg = base_config(opts, "corestream-bench-admin");
    apply_props(&mut cfg, opts);
    let admin: AdminClient<DefaultClientContext> = cfg.create().context("create admin client")?;
    let aopts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(30)));
    let nt = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let res = futures_lite::future::block_on(admin.create_topics([&nt], &aopts))
        .with_context(|| format!("create topic {topic} on {}", opts.bootstrap))?;
    for r in res {
        if let Err((t, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                bail!("create topic {t}: {code}");
            }
        }
    }
    let mut mcfg = base_config(opts, "corestream-bench-metadata");
    mcfg.set("allow.auto.create.topics", "false");
    apply_props(&mut mcfg, opts);
    let c: BaseConsumer<BenchContext> = mcfg.create_with_context(BenchContext::default()).context("create client")?;
    let deadline = mono_ns() + TOPIC_READY_TIMEOUT.as_nanos() as u64;
    let mut last = String::from("not seen");
    while mono_ns() < deadline {
        match c.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                    let leaders_ok = t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none());
                    if t.error().is_none() && t.partitions().len() == partitions as usize && leaders_ok {
                        return Ok(());
                    }
                    last = format!("{} of {partitions} partitions ready", t.partitions().len());
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("topic {topic} not ready after {TOPIC_READY_TIMEOUT:?}: {last}")
}

/// Deletes `topic` (best effort; errors are returned for a note).
pub fn delete_topic(opts: &RunOptions, topic: &str) -> Result<()> {
    let mut cfg = base_config(opts, "corestream-bench-admin");
    apply_props(&mut cfg, opts);
    let admin: AdminClient<DefaultClientContext> = cfg.create().context("create admin client")?;
    let aopts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(30)));
    let res = futures_lite::future::block_on(admin.delete_topics(&[topic], &aopts)).context("delete topic")?;
    for r in res {
        if let Err((t, code)) = r {
            bail!("delete topic {t}: {code}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Producer threads
// ---------------------------------------------------------------------------

struct ProducerPlan {
    topic: String,
    workload: Workload,
    clients: Vec<usize>,
    /// Messages per second for this thread (None: unthrottled).
    rate: Option<f64>,
    seed: u64,
}

struct ProducerOutcome {
    stats: Arc<ProduceStats>,
    sent_window: u64,
    send_errors: u64,
    first_send_error: Option<String>,
    unflushed: u64,
}

fn spawn_producer(
    plan: ProducerPlan,
    cfg: ClientConfig,
    shared: Arc<Shared>,
    barrier: Arc<Barrier>,
) -> Result<JoinHandle<Result<ProducerOutcome>>> {
    std::thread::Builder::new()
        .name("bench-producer".into())
        .spawn(move || {
            let stats = Arc::new(ProduceStats {
                shared: shared.clone(),
                message_size: plan.workload.message_size as u64,
                ack: LatencyAcc::new(),
                acked_window: AtomicU64::new(0),
                acked_all: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                first_error: Mutex::new(None),
                last_ack_ns: AtomicU64::new(0),
            });
            let made: Result<Vec<BaseProducer<ProducerCtx>>> = plan
                .clients
                .iter()
                .map(|_| {
                    cfg.create_with_context(ProducerCtx { base: BenchContext::default(), stats: stats.clone() })
                        .context("create producer")
                })
                .collect();
            let clients = match made {
                Ok(c) => c,
                Err(e) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    barrier.wait();
                    return Err(e);
                }
            };
            // Connect and learn the topic before the clock starts.
            for c in &clients {
                let _ = c.client().fetch_metadata(Some(&plan.topic), Duration::from_secs(10));
            }
            barrier.wait();
            produce_loop(&plan, &clients, &shared, stats)
        })
        .context("spawn producer thread")
}

fn produce_loop(
    plan: &ProducerPlan,
    clients: &[BaseProducer<ProducerCtx>],
    shared: &Shared,
    stats: Arc<ProduceStats>,
) -> Result<ProducerOutcome> {
    let w = &plan.workload;
    let mut rng = SplitMix64::new(plan.seed);
    let mut payload = vec![0u8; w.message_size];
    rng.fill(&mut payload);
    let keygen = KeyGen::new(w.keys, KEY_SPACE, ZIPF_EXPONENT);
    let keys: Vec<Vec<u8>> = if w.keys == super::workload::KeyDist::None {
        Vec::new()
    } else {
        (0..KEY_SPACE).map(KeyGen::key_bytes).collect()
    };
    let mut sent: u64 = 0;
    let mut sent_window: u64 = 0;
    let mut send_errors: u64 = 0;
    let mut first_send_error: Option<String> = None;
    let mut next_client = 0usize;
    // Slice partitioning: each client's own partitions and a cursor.
    let slices: Vec<Vec<i32>> = plan
        .clients
        .iter()
        .map(|i| match w.partitioning {
            Partitioning::Client => Vec::new(),
            Partitioning::Slice => partitions_for_producer(w.partitions, w.producers, *i),
        })
        .collect();
    let mut cursors = vec![0usize; clients.len()];
    let mut last_sweep_ns = 0u64;
    let start = mono_ns();
    'outer: loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = mono_ns();
        let due = match plan.rate {
            Some(r) => {
                let target = ((now - start) as f64 * r / 1e9) as u64;
                let due = target.saturating_sub(sent);
                if due == 0 {
                    sweep(clients, &mut last_sweep_ns);
                    let next_ns = start + ((sent + 1) as f64 * 1e9 / r) as u64;
                    let wait = Duration::from_nanos(next_ns.saturating_sub(mono_ns())).min(THROTTLE_SLEEP_MAX);
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    continue;
                }
                due.min(SENDS_PER_POLL)
            }
            None => SENDS_PER_POLL,
        };
        for _ in 0..due {
            if shared.send_limit != u64::MAX
                && shared.sent_total.fetch_add(1, Ordering::Relaxed) >= shared.send_limit
            {
                shared.stop.store(true, Ordering::Relaxed);
                break 'outer;
            }
            let ci = next_client;
            let client = &clients[ci];
            next_client = (next_client + 1) % clients.len();
            let key = keygen.next_index(&mut rng).and_then(|i| keys.get(i));
            let partition = slices[ci].get(cursors[ci] % slices[ci].len().max(1)).copied();
            cursors[ci] = cursors[ci].wrapping_add(1);
            loop {
                let t = mono_ns();
                if payload.len() >= STAMP_BYTES {
                    payload[..STAMP_BYTES].copy_from_slice(&t.to_le_bytes());
                }
                let mut rec = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&plan.topic, t as usize)
                    .payload(payload.as_slice());
                if let Some(k) = key {
                    rec = rec.key(k.as_slice());
                }
                if let Some(p) = partition {
                    rec = rec.partition(p);
                }
                match client.send(rec) {
                    Ok(()) => {
                        sent += 1;
                        if shared.in_window(t) {
                            sent_window += 1;
                        }
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        client.poll(Duration::from_millis(1));
                        if shared.stop.load(Ordering::Relaxed) {
                            break 'outer;
                        }
                    }
                    Err((e, _)) => {
                        send_errors += 1;
                        first_send_error.get_or_insert_with(|| e.to_string());
                        client.poll(Duration::from_millis(1));
                        break;
                    }
                }
            }
        }
        sweep(clients, &mut last_sweep_ns);
    }
    // Flush every client within one overall bound.
    let deadline = mono_ns() + FLUSH_TIMEOUT.as_nanos() as u64;
    let mut unflushed = 0u64;
    for c in clients {
        let left = Duration::from_nanos(deadline.saturating_sub(mono_ns()).max(1_000_000));
        if c.flush(left).is_err() {
            unflushed += c.in_flight_count().max(0) as u64;
        }
    }
    Ok(ProducerOutcome { stats, sent_window, send_errors, first_send_error, unflushed })
}

/// Most delivery-report events one client serves per sweep.
const REPORT_EVENTS_PER_SWEEP_MAX: usize = 4096;

/// Serves every delivery report a client has waiting. `BaseProducer::poll` with a zero
/// timeout serves at most one event (one produce response's messages for one partition),
/// so polling once per sweep let reports pile up whenever requests carry few records
/// (`linger.ms=0`: about 12,000 events/s at 25 MB/s), and the backlog showed up as ack
/// latency that the broker never caused. `in_flight_count` (librdkafka's out-queue length)
/// counts unserved reports, so it stops falling when none is left.
fn serve_reports(c: &BaseProducer<ProducerCtx>) {
    for _ in 0..REPORT_EVENTS_PER_SWEEP_MAX {
        let before = c.in_flight_count();
        c.poll(Duration::ZERO);
        if c.in_flight_count() >= before {
            break;
        }
    }
}

/// Serves the delivery reports of every client: at once for a single client,
/// at most every [`POLL_SWEEP_INTERVAL_NS`] for several.
fn sweep(clients: &[BaseProducer<ProducerCtx>], last_sweep_ns: &mut u64) {
    let now = mono_ns();
    if clients.len() == 1 || now.saturating_sub(*last_sweep_ns) >= POLL_SWEEP_INTERVAL_NS {
        for c in clients {
            serve_reports(c);
        }
        *last_sweep_ns = now;
    }
}

// ---------------------------------------------------------------------------
// Consumer threads
// ---------------------------------------------------------------------------

struct ConsumerOutcome {
    e2e: Histogram,
    e2e_max_us: u64,
    e2e_sum_us: u128,
    consumed_window: u64,
    bytes_window: u64,
    consumed_all: u64,
    bytes_all: u64,
    errors: u64,
    first_error: Option<String>,
}

fn spawn_consumer(
    topic: String,
    partitions: Vec<i32>,
    cfg: ClientConfig,
    shared: Arc<Shared>,
    barrier: Arc<Barrier>,
    record_e2e: bool,
) -> Result<JoinHandle<Result<ConsumerOutcome>>> {
    std::thread::Builder::new()
        .name("bench-consumer".into())
        .spawn(move || {
            let made = (|| -> Result<BaseConsumer<BenchContext>> {
                let c: BaseConsumer<BenchContext> =
                    cfg.create_with_context(BenchContext::default()).context("create consumer")?;
                let mut tpl = TopicPartitionList::new();
                for p in &partitions {
                    tpl.add_partition_offset(&topic, *p, Offset::Beginning).context("assignment")?;
                }
                c.assign(&tpl).context("assign partitions")?;
                Ok(c)
            })();
            barrier.wait();
            let c = made?;
            Ok(consume_loop(&c, &shared, record_e2e))
        })
        .context("spawn consumer thread")
}

fn consume_loop(c: &BaseConsumer<BenchContext>, shared: &Shared, record_e2e: bool) -> ConsumerOutcome {
    let mut out = ConsumerOutcome {
        e2e: latency_histogram(),
        e2e_max_us: 0,
        e2e_sum_us: 0,
        consumed_window: 0,
        bytes_window: 0,
        consumed_all: 0,
        bytes_all: 0,
        errors: 0,
        first_error: None,
    };
    loop {
        let now = mono_ns();
        if now >= shared.drain_deadline_ns.load(Ordering::Relaxed) {
            break;
        }
        if shared.producers_done.load(Ordering::Relaxed)
            && shared.consumed_total.load(Ordering::Relaxed) >= shared.acked_total.load(Ordering::Relaxed)
        {
            break;
        }
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let now = mono_ns();
                let len = m.payload_len() as u64;
                out.consumed_all += 1;
                out.bytes_all += len;
                shared.consumed_total.fetch_add(1, Ordering::Relaxed);
                shared.last_receipt_ns.fetch_max(now, Ordering::Relaxed);
                if shared.in_window(now) {
                    out.consumed_window += 1;
                    out.bytes_window += len;
                }
                if record_e2e {
                    if let Some(p) = m.payload() {
                        if let Some(stamp) = p.get(..STAMP_BYTES).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                            let sent = u64::from_le_bytes(stamp);
                            if shared.in_window(sent) && sent <= now {
                                let us = ((now - sent) / 1000).min((1u64 << LATENCY_MAX_VALUE_POWER) - 1);
                                let _ = out.e2e.increment(us);
                                out.e2e_max_us = out.e2e_max_us.max(us);
                                out.e2e_sum_us += us as u128;
                            }
                        }
                    }
                }
            }
            Some(Err(e)) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// A topic name unique to this run.
pub fn unique_topic(workload: &str) -> String {
    let clean: String = workload
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    format!("bench-{clean}-{}-{:x}", std::process::id(), mono_ns())
}

struct CpuSample {
    broker: Option<procstat::CpuTicks>,
    client: Option<procstat::CpuTicks>,
}

fn sample_cpu(broker_pid: Option<u32>) -> CpuSample {
    CpuSample {
        broker: broker_pid.and_then(|p| procstat::read_cpu(p).ok()),
        client: procstat::read_cpu(std::process::id()).ok(),
    }
}

/// Runs one workload and returns what it measured.
pub fn run_workload(w: &Workload, opts: &RunOptions) -> Result<RunResult> {
    w.validate()?;
    let target = w.rate.resolve(w.message_size, opts.measured_max_msg_per_sec)?;
    let topic = unique_topic(&w.name);
    let started_unix = unix_secs();
    create_topic(opts, &topic, w.partitions)?;
    let result = match w.consume_mode {
        ConsumeMode::Tail => run_tail(w, opts, &topic, target),
        ConsumeMode::CatchUp => run_catch_up(w, opts, &topic, target),
    };
    let mut result = result?;
    result.started_unix = started_unix;
    if !opts.keep_topic {
        if let Err(e) = delete_topic(opts, &topic) {
            result.notes.push(format!("could not delete topic {topic}: {e:#}"));
        }
    }
    Ok(result)
}

struct Threads {
    producers: Vec<JoinHandle<Result<ProducerOutcome>>>,
    consumers: Vec<JoinHandle<Result<ConsumerOutcome>>>,
}

fn spawn_producers(
    w: &Workload,
    opts: &RunOptions,
    topic: &str,
    target: Option<f64>,
    shared: &Arc<Shared>,
    barrier: &Arc<Barrier>,
) -> Result<Vec<JoinHandle<Result<ProducerOutcome>>>> {
    let threads = w.effective_producer_threads();
    let cfg = producer_config(w, opts);
    let mut out = Vec::new();
    for t in 0..threads {
        let clients = producers_for_thread(w.producers, threads, t);
        let rate = target.map(|r| r * clients.len() as f64 / w.producers as f64);
        let plan = ProducerPlan {
            topic: topic.to_string(),
            workload: w.clone(),
            clients,
            rate,
            seed: mono_ns() ^ ((t as u64) << 48),
        };
        out.push(spawn_producer(plan, cfg.clone(), shared.clone(), barrier.clone())?);
    }
    Ok(out)
}

fn spawn_consumers(
    w: &Workload,
    opts: &RunOptions,
    topic: &str,
    shared: &Arc<Shared>,
    barrier: &Arc<Barrier>,
    record_e2e: bool,
) -> Result<Vec<JoinHandle<Result<ConsumerOutcome>>>> {
    let n = w.effective_consumers();
    let cfg = consumer_config(opts);
    let mut out = Vec::new();
    for i in 0..n {
        let parts = partitions_for_consumer(w.partitions, n, i);
        out.push(spawn_consumer(topic.to_string(), parts, cfg.clone(), shared.clone(), barrier.clone(), record_e2e)?);
    }
    Ok(out)
}

/// Waits on the barrier from the driver, bounded: a client that cannot be
/// created must not hang the run.
fn wait_barrier(barrier: &Arc<Barrier>) -> Result<()> {
    let b = barrier.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        b.wait();
        let _ = tx.send(());
    });
    rx.recv_timeout(CLIENTS_READY_TIMEOUT)
        .map_err(|_| anyhow!("clients not ready after {CLIENTS_READY_TIMEOUT:?}"))
}

fn join<T>(h: JoinHandle<Result<T>>, what: &str) -> Result<T> {
    match h.join() {
        Ok(r) => r,
        Err(_) => Err(anyhow!("{what} thread panicked")),
    }
}

struct ProduceTotals {
    ack: LatencyTotal,
    acked_window: u64,
    acked_all: u64,
    sent_window: u64,
    errors: u64,
    last_ack_ns: u64,
    notes: Vec<String>,
}

fn collect_producers(hs: Vec<JoinHandle<Result<ProducerOutcome>>>) -> Result<ProduceTotals> {
    let mut t = ProduceTotals {
        ack: LatencyTotal::new(),
        acked_window: 0,
        acked_all: 0,
        sent_window: 0,
        errors: 0,
        last_ack_ns: 0,
        notes: Vec::new(),
    };
    let mut first_err: Option<String> = None;
    let mut unflushed = 0;
    for h in hs {
        let o = join(h, "producer")?;
        let s = &o.stats;
        t.ack.add(
            &s.ack.hist.load(),
            s.ack.max_us.load(Ordering::Relaxed),
            s.ack.sum_us.load(Ordering::Relaxed) as u128,
        );
        t.acked_window += s.acked_window.load(Ordering::Relaxed);
        t.acked_all += s.acked_all.load(Ordering::Relaxed);
        t.sent_window += o.sent_window;
        t.errors += s.errors.load(Ordering::Relaxed) + o.send_errors;
        t.last_ack_ns = t.last_ack_ns.max(s.last_ack_ns.load(Ordering::Relaxed));
        unflushed += o.unflushed;
        if first_err.is_none() {
            first_err = s.first_error.lock().ok().and_then(|g| g.clone()).or(o.first_send_error);
        }
        debug_assert!(s.message_size > 0);
    }
    if let Some(e) = first_err {
        t.notes.push(format!("first produce error: {e}"));
    }
    if unflushed > 0 {
        t.notes.push(format!("{unflushed} records still unacknowledged after {FLUSH_TIMEOUT:?} of flushing"));
    }
    Ok(t)
}

struct ConsumeTotals {
    e2e: LatencyTotal,
    window: u64,
    bytes_window: u64,
    all: u64,
    bytes_all: u64,
    errors: u64,
    notes: Vec<String>,
}

fn collect_consumers(hs: Vec<JoinHandle<Result<ConsumerOutcome>>>) -> Result<ConsumeTotals> {
    let mut t = ConsumeTotals {
        e2e: LatencyTotal::new(),
        window: 0,
        bytes_window: 0,
        all: 0,
        bytes_all: 0,
        errors: 0,
        notes: Vec::new(),
    };
    let mut first_err = None;
    for h in hs {
        let o = join(h, "consumer")?;
        t.e2e.add(&o.e2e, o.e2e_max_us, o.e2e_sum_us);
        t.window += o.consumed_window;
        t.bytes_window += o.bytes_window;
        t.all += o.consumed_all;
        t.bytes_all += o.bytes_all;
        t.errors += o.errors;
        if first_err.is_none() {
            first_err = o.first_error;
        }
    }
    if let Some(e) = first_err {
        t.notes.push(format!("first consume error: {e}"));
    }
    Ok(t)
}

fn new_shared(send_limit: u64) -> Arc<Shared> {
    Arc::new(Shared {
        window_start_ns: AtomicU64::new(u64::MAX),
        window_end_ns: AtomicU64::new(u64::MAX),
        stop: AtomicBool::new(false),
        acked_total: AtomicU64::new(0),
        consumed_total: AtomicU64::new(0),
        producers_done: AtomicBool::new(false),
        drain_deadline_ns: AtomicU64::new(u64::MAX),
        send_limit,
        sent_total: AtomicU64::new(0),
        last_receipt_ns: AtomicU64::new(0),
    })
}

/// Tells every thread to stop after a failure. The threads are not joined:
/// one may still be blocked creating its client or on the start barrier (a
/// thread that failed to spawn never arrives there); each ends by itself
/// once past it, and the process does not wait for them.
fn abort_threads(shared: &Shared, threads: Threads) {
    shared.stop.store(true, Ordering::Relaxed);
    shared.producers_done.store(true, Ordering::Relaxed);
    shared.drain_deadline_ns.store(0, Ordering::Relaxed);
    drop(threads);
}

fn cpu_between(pid: Option<u32>, a: &CpuSample, b: &CpuSample, bytes_moved: u64, secs: f64) -> Option<BrokerCpu> {
    match (pid, a.broker, b.broker) {
        (Some(pid), Some(x), Some(y)) => Some(BrokerCpu::new(pid, procstat::cpu_seconds(x, y), bytes_moved, secs)),
        _ => None,
    }
}

fn client_cpu(a: &CpuSample, b: &CpuSample) -> f64 {
    match (a.client, b.client) {
        (Some(x), Some(y)) => procstat::cpu_seconds(x, y),
        _ => 0.0,
    }
}

fn run_tail(w: &Workload, opts: &RunOptions, topic: &str, target: Option<f64>) -> Result<RunResult> {
    let shared = new_shared(u64::MAX);
    // Every producer and consumer thread, and this one.
    let barrier = Arc::new(Barrier::new(w.effective_producer_threads() + w.effective_consumers() + 1));
    let mut threads = Threads { producers: Vec::new(), consumers: Vec::new() };
    let spawned = (|| -> Result<()> {
        threads.consumers = spawn_consumers(w, opts, topic, &shared, &barrier, true)?;
        threads.producers = spawn_producers(w, opts, topic, target, &shared, &barrier)?;
        Ok(())
    })();
    if let Err(e) = spawned.and_then(|_| wait_barrier(&barrier)) {
        abort_threads(&shared, threads);
        return Err(e);
    }
    let t0 = mono_ns();
    let ws = t0 + w.warmup.as_nanos() as u64;
    let we = ws + w.duration.as_nanos() as u64;
    shared.window_start_ns.store(ws, Ordering::Relaxed);
    shared.window_end_ns.store(we, Ordering::Relaxed);
    sleep_until_ns(ws);
    let cpu_a = sample_cpu(opts.broker_pid);
    sleep_until_ns(we);
    let cpu_b = sample_cpu(opts.broker_pid);
    shared.stop.store(true, Ordering::Relaxed);
    let window_secs = w.duration.as_secs_f64();

    let producers = std::mem::take(&mut threads.producers);
    let prod = collect_producers(producers);
    shared.producers_done.store(true, Ordering::Relaxed);
    let drain = w.duration.max(DRAIN_TIMEOUT_MIN);
    shared.drain_deadline_ns.store(mono_ns() + drain.as_nanos() as u64, Ordering::Relaxed);
    let cons = collect_consumers(std::mem::take(&mut threads.consumers));
    let (prod, cons) = (prod?, cons?);

    let produced_bytes = prod.acked_window * w.message_size as u64;
    let mut notes = prod.notes;
    notes.extend(cons.notes);
    if w.effective_consumers() > 0 && cons.all < prod.acked_all {
        notes.push(format!(
            "consumers read {} of {} acknowledged records before the drain bound ({drain:?})",
            cons.all, prod.acked_all
        ));
    }
    if w.effective_consumers() < w.consumers {
        notes.push(format!("only {} consumers started (one per partition at most)", w.effective_consumers()));
    }
    if w.message_size < STAMP_BYTES {
        notes.push(format!("records under {STAMP_BYTES} bytes carry no timestamp: no end-to-end latency"));
    }
    Ok(RunResult {
        broker: opts.broker_name.clone(),
        address: opts.bootstrap.clone(),
        workload: w.clone(),
        target_msg_per_sec: target,
        topic: topic.to_string(),
        started_unix: 0,
        measured_seconds: window_secs,
        produce: Throughput::new(prod.acked_window, produced_bytes, window_secs),
        consume: Throughput::new(cons.window, cons.bytes_window, window_secs),
        sent: prod.sent_window,
        produce_errors: prod.errors,
        consume_errors: cons.errors,
        ack_latency: prod.ack.summary(),
        e2e_latency: cons.e2e.summary(),
        catch_up: None,
        broker_cpu: cpu_between(opts.broker_pid, &cpu_a, &cpu_b, produced_bytes + cons.bytes_window, window_secs),
        client_cpu_seconds: client_cpu(&cpu_a, &cpu_b),
        notes,
    })
}

fn run_catch_up(w: &Workload, opts: &RunOptions, topic: &str, target: Option<f64>) -> Result<RunResult> {
    let backlog_bytes = w.backlog_bytes_per_partition.saturating_mul(w.partitions as u64);
    let backlog_msgs = backlog_bytes.div_ceil(w.message_size as u64);
    let phase_bound = w.duration * super::workload::CATCH_UP_PHASE_DURATION_FACTOR;
    let shared = new_shared(backlog_msgs);
    // Every record of the backlog counts for acks and latencies.
    shared.window_start_ns.store(0, Ordering::Relaxed);

    // Phase 1: the backlog.
    let barrier = Arc::new(Barrier::new(w.effective_producer_threads() + 1));
    let producers = spawn_producers(w, opts, topic, target, &shared, &barrier)?;
    if let Err(e) = wait_barrier(&barrier) {
        abort_threads(&shared, Threads { producers, consumers: Vec::new() });
        return Err(e);
    }
    let t0 = mono_ns();
    let cpu_a = sample_cpu(opts.broker_pid);
    let stop_at = t0 + phase_bound.as_nanos() as u64;
    // The producers stop by themselves at the send limit; bound the phase.
    {
        let shared = shared.clone();
        std::thread::spawn(move || {
            while mono_ns() < stop_at && !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            shared.stop.store(true, Ordering::Relaxed);
        });
    }
    let prod = collect_producers(producers)?;
    shared.stop.store(true, Ordering::Relaxed);
    let produce_end = if prod.last_ack_ns > t0 { prod.last_ack_ns } else { mono_ns() };
    let produce_secs = (produce_end - t0) as f64 / 1e9;
    let mut notes = prod.notes;
    if prod.acked_all < backlog_msgs {
        notes.push(format!(
            "backlog incomplete: {} of {backlog_msgs} records acknowledged within {phase_bound:?}",
            prod.acked_all
        ));
    }

    // Phase 2: drain from the beginning.
    shared.producers_done.store(true, Ordering::Relaxed);
    let barrier = Arc::new(Barrier::new(w.effective_consumers() + 1));
    let consumers = spawn_consumers(w, opts, topic, &shared, &barrier, false)?;
    if let Err(e) = wait_barrier(&barrier) {
        abort_threads(&shared, Threads { producers: Vec::new(), consumers });
        return Err(e);
    }
    let d0 = mono_ns();
    shared.drain_deadline_ns.store(d0 + phase_bound.as_nanos() as u64, Ordering::Relaxed);
    let cons = collect_consumers(consumers)?;
    let d1 = shared.last_receipt_ns.load(Ordering::Relaxed).max(d0);
    let cpu_b = sample_cpu(opts.broker_pid);
    let t1 = mono_ns();
    let drain_secs = (d1 - d0) as f64 / 1e9;
    let complete = cons.all >= prod.acked_all;
    notes.extend(cons.notes);
    if !complete {
        notes.push(format!("drain incomplete: {} of {} records read within {phase_bound:?}", cons.all, prod.acked_all));
    }
    let produced_bytes = prod.acked_all * w.message_size as u64;
    let total_secs = (t1 - t0) as f64 / 1e9;
    Ok(RunResult {
        broker: opts.broker_name.clone(),
        address: opts.bootstrap.clone(),
        workload: w.clone(),
        target_msg_per_sec: target,
        topic: topic.to_string(),
        started_unix: 0,
        measured_seconds: total_secs,
        produce: Throughput::new(prod.acked_all, produced_bytes, produce_secs),
        consume: Throughput::new(cons.all, cons.bytes_all, drain_secs),
        sent: shared.sent_total.load(Ordering::Relaxed).min(backlog_msgs),
        produce_errors: prod.errors,
        consume_errors: cons.errors,
        ack_latency: prod.ack.summary(),
        e2e_latency: None,
        catch_up: Some(CatchUp {
            backlog_messages: prod.acked_all,
            backlog_bytes: produced_bytes,
            produce_seconds: produce_secs,
            drain_seconds: drain_secs,
            complete,
        }),
        broker_cpu: cpu_between(opts.broker_pid, &cpu_a, &cpu_b, produced_bytes + cons.bytes_all, total_secs),
        client_cpu_seconds: client_cpu(&cpu_a, &cpu_b),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_unique_and_legal() {
        let a = unique_topic("max-throughput-acks1");
        let b = unique_topic("max-throughput-acks1");
        assert_ne!(a, b);
        let odd = unique_topic("a b/c");
        assert!(odd.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{odd}");
        assert!(a.len() < 249);
    }

    #[test]
    fn mono_clock_moves_forward() {
        let a = mono_ns();
        std::thread::sleep(Duration::from_millis(2));
        assert!(mono_ns() >= a + 1_000_000);
    }

    #[test]
    fn latency_accumulator_merges() {
        let acc = LatencyAcc::new();
        for v in [10, 20, 30, u64::MAX] {
            acc.record(v);
        }
        let mut t = LatencyTotal::new();
        t.add(&acc.hist.load(), acc.max_us.load(Ordering::Relaxed), acc.sum_us.load(Ordering::Relaxed) as u128);
        let s = t.summary().unwrap();
        assert_eq!(s.count, 4);
        assert!(s.p50_us <= s.p99_us && s.p99_us <= s.max_us);
    }
}
