//! Micro-benchmarks of corestream's hot paths, each beside the obvious alternative, all
//! reporting throughput so that the results read as ratios.
//!
//! ```text
//! cargo bench --bench hot_paths                       # full run (a few minutes)
//! cargo bench --bench hot_paths -- --quick            # short run
//! cargo bench --bench hot_paths -- append             # one group
//! cargo test --bench hot_paths                        # each function once (CI smoke test)
//! ```
//!
//! Groups (one per primitive):
//! 1. `frame_decode`: request header only (`parse_request`) vs the body decode the produce
//!    handler does (`ProduceRequest::decode`, records stay `Bytes`), vs the handler's whole
//!    pre-dispatch work (plus `split_and_validate`), vs materialising every record
//!    (`RecordBatchDecoder`), for a Produce v9 request carrying one 16 KiB batch.
//! 2. `batch_validate`: `split_and_validate` of uncompressed batches of 1..1000 records of
//!    1 KiB, vs CRC-32C alone over the bytes it covers (the floor), vs kafka-protocol's
//!    `RecordBatchDecoder::decode` (materialising records: what the broker avoids).
//! 3. `append`: `PartitionLog::append` (acks=1 `Queued`, acks=all `Synced`) of 1 KiB and
//!    16 KiB batches in a glommio executor, vs `std::fs` buffered `write` (+ `fdatasync`,
//!    into a plain growing file and into a preallocated one).
//! 4. `index_lookup`: `OffsetIndex::lookup` over 250k entries vs a linear scan vs a BTreeMap.
//! 5. `fetch_read`: `PartitionLog::read` of 1 MiB from the in-memory tail vs from disk (DMA
//!    read plus a CRC check of every batch) vs a `pread` of the same bytes from the page cache.
//!
//! Setup is kept cheap so that `cargo test --benches` (criterion's test mode: each function
//! once, debug build) finishes in seconds. Disk use is bounded: logs and files are recreated
//! every `RECREATE_BYTES`. Results and the command used: benches/README.md, "Micro-benchmarks".

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;

use corestream::config::LogConfig;
use corestream::protocol::batch::{self, BatchHeader, ATTRIBUTES_POS};
use corestream::protocol::frame;
use corestream::storage::index::OffsetIndex;
use corestream::storage::log::{Durability, PartitionLog};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// The io_uring buffer pool of the benchmark's executor. RLIMIT_MEMLOCK is low on the CI
/// machines (8 MiB); larger DMA buffers come from the heap, as in the unit tests.
const IO_MEMORY: usize = 2 * MIB;

thread_local! {
    /// One executor for the whole run: making one per sample would be measured noise, and
    /// `LocalExecutor::run` can be entered again and again on the same thread.
    static EXECUTOR: LocalExecutor = LocalExecutorBuilder::default()
        .io_memory(IO_MEMORY)
        .make()
        .expect("creating a glommio executor (io_uring, RLIMIT_MEMLOCK)");
}

/// Runs `f` to completion on the thread's glommio executor.
fn block_on<T>(f: impl Future<Output = T>) -> T {
    EXECUTOR.with(|ex| ex.run(f))
}

/// Deterministic, incompressible-looking payloads and lookup targets.
struct Rng(corestream::util::SplitMix64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// An uncompressed v2 batch of records with null keys and the given value lengths.
fn batch_with_value_lens(lens: &[usize], seed: u64) -> BytesMut {
    let mut rng = Rng(corestream::util::SplitMix64::new(seed));
    let values: Vec<Vec<u8>> = lens.iter().map(|&n| rng.bytes(n)).collect();
    let kv: Vec<batch::KeyValue<'_>> = values.iter().map(|v| (None, Some(&v[..]))).collect();
    batch::build_batch(&kv, 1_700_000_000_000)
}

/// A batch of `records` records whose values are `value_len` bytes each.
fn batch_of_records(records: usize, value_len: usize) -> BytesMut {
    batch_with_value_lens(&vec![value_len; records], records as u64)
}

/// A batch of `records` records that is exactly `total` bytes long (header included).
fn batch_of_size(records: usize, total: usize) -> BytesMut {
    // About 9 bytes of per-record framing for values of a few hundred bytes to a few KiB.
    let mut lens = vec![((total - batch::BATCH_HEADER_BYTES) / records).saturating_sub(9); records];
    for _ in 0..8 {
        let b = batch_with_value_lens(&lens, total as u64);
        if b.len() == total {
            return b;
        }
        let last = lens.last_mut().expect("records > 0");
        *last = (*last as isize + total as isize - b.len() as isize) as usize;
    }
    panic!("cannot build a batch of {records} records and exactly {total} bytes");
}

fn human(bytes: usize) -> String {
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{}MiB", bytes / MIB)
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{}KiB", bytes / KIB)
    } else {
        format!("{bytes}B")
    }
}

/// Accumulates timed stretches of an `iter_custom` sample, so that setup inside the sample
/// (draining, recreating a log) is left out.
struct Stopwatch {
    total: Duration,
    started: Option<Instant>,
}

impl Stopwatch {
    fn started() -> Stopwatch {
        Stopwatch { total: Duration::ZERO, started: Some(Instant::now()) }
    }

    fn pause(&mut self) {
        if let Some(s) = self.started.take() {
            self.total += s.elapsed();
        }
    }

    fn resume(&mut self) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
    }

    fn stop(mut self) -> Duration {
        self.pause();
        self.total
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Frame decode
// ---------------------------------------------------------------------------------------------

const PRODUCE_VERSION: i16 = 9;

/// A Produce request frame (header and body, without the 4-byte size prefix, as
/// `parse_request` receives it) with one topic, one partition and `records`.
fn produce_frame(records: Bytes) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench-producer")));
    let body = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench-topic")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))]),
    ]);
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, ApiKey::Produce.request_header_version(PRODUCE_VERSION))
        .expect("encoding the request header");
    body.encode(&mut buf, PRODUCE_VERSION).expect("encoding the produce request");
    buf.freeze()
}

fn decode_produce(frame_bytes: &Bytes) -> ProduceRequest {
    let mut req = frame::parse_request(frame_bytes.clone()).expect("a valid header");
    ProduceRequest::decode(&mut req.body, req.api_version).expect("a valid produce request")
}

fn only_records(p: &ProduceRequest) -> &Bytes {
    p.topic_data[0].partition_data[0].records.as_ref().expect("records present")
}

fn bench_frame_decode(c: &mut Criterion) {
    let batch = batch_of_size(16, 16 * KIB).freeze();
    let frame_bytes = produce_frame(batch.clone());
    // Check once that every variant sees the same data.
    let p = decode_produce(&frame_bytes);
    assert_eq!(only_records(&p), &batch);
    let spans = batch::split_and_validate(only_records(&p), usize::MAX).expect("valid batch");
    assert_eq!(spans.len(), 1);
    let set = RecordBatchDecoder::decode(&mut only_records(&p).clone()).expect("decodable batch");
    assert_eq!(set.records.len(), 16);

    let mut g = c.benchmark_group("frame_decode");
    g.throughput(Throughput::Bytes(frame_bytes.len() as u64));
    let id = |name: &str| BenchmarkId::new(name, "produce_v9_16KiB");
    g.bench_function(id("header_only/parse_request"), |b| {
        b.iter(|| frame::parse_request(black_box(frame_bytes.clone())).expect("valid"))
    });
    g.bench_function(id("header+body/ProduceRequest::decode"), |b| {
        b.iter(|| decode_produce(black_box(&frame_bytes)))
    });
    g.bench_function(id("handler_path/decode+split_and_validate"), |b| {
        b.iter(|| {
            let p = decode_produce(black_box(&frame_bytes));
            batch::split_and_validate(only_records(&p), usize::MAX).expect("valid")
        })
    });
    g.bench_function(id("materialise/decode+RecordBatchDecoder"), |b| {
        b.iter(|| {
            let p = decode_produce(black_box(&frame_bytes));
            RecordBatchDecoder::decode(&mut only_records(&p).clone()).expect("valid")
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Batch validation
// ---------------------------------------------------------------------------------------------

fn bench_batch_validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_validate");
    for records in [1usize, 10, 100, 1000] {
        let bytes = batch_of_records(records, KIB).freeze();
        // Our own, valid batch: the same bytes pass all three.
        assert_eq!(batch::split_and_validate(&bytes, usize::MAX).expect("valid").len(), 1);
        let header = BatchHeader::parse(&bytes).expect("header");
        assert_eq!(crc32c::crc32c(&bytes[ATTRIBUTES_POS..]), header.crc);
        assert_eq!(RecordBatchDecoder::decode(&mut bytes.clone()).expect("valid").records.len(), records);

        g.throughput(Throughput::Bytes(bytes.len() as u64));
        let param = format!("{records}x1KiB");
        g.bench_with_input(BenchmarkId::new("split_and_validate", &param), &bytes, |b, bytes| {
            b.iter(|| batch::split_and_validate(black_box(bytes), usize::MAX).expect("valid"))
        });
        g.bench_with_input(BenchmarkId::new("crc32c_only", &param), &bytes, |b, bytes| {
            b.iter(|| crc32c::crc32c(black_box(&bytes[ATTRIBUTES_POS..])))
        });
        g.bench_with_input(BenchmarkId::new("RecordBatchDecoder", &param), &bytes, |b, bytes| {
            b.iter(|| RecordBatchDecoder::decode(&mut black_box(bytes).clone()).expect("valid"))
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Append
// ---------------------------------------------------------------------------------------------

/// Segments large enough that a benchmark log never rolls (it is recreated first).
const SEGMENT_BYTES: u64 = 1 << 30;
/// A log (or the baseline file) holding this much is replaced, untimed: bounds disk use.
const RECREATE_BYTES: u64 = 256 * MIB as u64;
/// Queued appends drain (wait for writes and sync) every this many bytes, half of the log's
/// `PENDING_BYTES_MAX`, so a queued append never hits backpressure.
const DRAIN_BYTES: u64 = 16 * MIB as u64;
/// Batches to append are copied from the template this many at a time, untimed.
const APPEND_CHUNK: u64 = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
enum LogMode {
    /// acks=1: timed until each `append(.., Queued)` returns; draining every `DRAIN_BYTES`
    /// is not timed. The synchronous cost a producer waits for.
    Queued,
    /// acks=1, sustained: the same appends, with the drains (the flusher's DMA writes and
    /// one fdatasync per `DRAIN_BYTES` and per sample) timed. The write throughput.
    QueuedSustained,
    /// acks=all: each append waits for its fdatasync (one producer, no group commit).
    Synced,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StdMode {
    /// `write(2)` into the page cache; an untimed `fdatasync` every `DRAIN_BYTES`.
    Write,
    /// `write(2)`, with an `fdatasync` every `DRAIN_BYTES` and per sample timed.
    WriteSustained,
    /// `write(2)` + `fdatasync` per batch.
    WriteFdatasyncEach,
    /// The same into a file preallocated with `fallocate(FALLOC_FL_KEEP_SIZE)`, as the log
    /// preallocates its segments: separates the cost of block allocation from the rest.
    PreallocWriteFdatasyncEach,
}

impl StdMode {
    fn sync_each(self) -> bool {
        matches!(self, StdMode::WriteFdatasyncEach | StdMode::PreallocWriteFdatasyncEach)
    }
}

/// Empties the baseline file and, for the preallocating mode, reserves its blocks again
/// (truncation frees blocks past the end, preallocated or not).
fn reset_std_file(file: &File, mode: StdMode) {
    use std::os::fd::AsRawFd;
    file.set_len(0).expect("truncating");
    if mode == StdMode::PreallocWriteFdatasyncEach {
        let len = (RECREATE_BYTES + DRAIN_BYTES) as libc::off_t;
        // SAFETY: fallocate on an open, owned file descriptor; no memory is passed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
        assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    }
    file.sync_all().expect("fsync");
}

async fn open_fresh_log(root: &Path, generation: &mut u32, template: &BytesMut) -> Rc<PartitionLog> {
    *generation += 1;
    let dir = root.join(format!("log-{generation}"));
    let log =
        PartitionLog::open(dir, LogConfig::with_segment_bytes(SEGMENT_BYTES)).await.expect("opening the log");
    // Untimed first append: creates and preallocates the segment file.
    log.append(template.clone(), 0, Durability::Synced).await.expect("append");
    log
}

async fn retire_log(log: Rc<PartitionLog>) {
    log.close().await.expect("closing the log");
    let dir: PathBuf = log.dir().to_path_buf();
    drop(log);
    std::fs::remove_dir_all(dir).expect("removing the log directory");
}

fn corestream_append(root: &Path, template: &BytesMut, iters: u64, mode: LogMode) -> Duration {
    let len = template.len() as u64;
    let durability = if mode == LogMode::Synced { Durability::Synced } else { Durability::Queued };
    block_on(async {
        let mut generation = 0;
        let mut log = open_fresh_log(root, &mut generation, template).await;
        let (mut in_log, mut since_drain) = (len, 0u64);
        let mut watch = Stopwatch::started();
        let mut batches: Vec<BytesMut> = Vec::with_capacity(APPEND_CHUNK as usize);
        for chunk_start in (0..iters).step_by(APPEND_CHUNK as usize) {
            // The produce handler hands the log a slice of the request frame without a copy:
            // the owned buffers are made outside the timed stretch.
            watch.pause();
            batches.extend((chunk_start..iters.min(chunk_start + APPEND_CHUNK)).map(|_| template.clone()));
            watch.resume();
            for batch in batches.drain(..) {
                log.append(batch, 0, durability).await.expect("append");
                in_log += len;
                since_drain += len;
                if since_drain >= DRAIN_BYTES {
                    since_drain = 0;
                    if mode == LogMode::Queued {
                        watch.pause();
                    }
                    log.wait_durable(log.log_end_offset()).await.expect("sync");
                    if in_log >= RECREATE_BYTES {
                        watch.pause();
                        retire_log(log).await;
                        log = open_fresh_log(root, &mut generation, template).await;
                        in_log = len;
                    }
                    watch.resume();
                }
            }
        }
        if mode == LogMode::QueuedSustained {
            log.wait_durable(log.log_end_offset()).await.expect("sync");
        }
        let elapsed = watch.stop();
        retire_log(log).await;
        elapsed
    })
}

fn std_append(root: &Path, template: &[u8], iters: u64, mode: StdMode) -> Duration {
    let path = root.join("std-baseline.log");
    let mut file =
        OpenOptions::new().create(true).append(true).open(&path).expect("opening the baseline file");
    reset_std_file(&file, mode);
    let len = template.len() as u64;
    let (mut in_file, mut since_drain) = (0u64, 0u64);
    let mut watch = Stopwatch::started();
    for _ in 0..iters {
        file.write_all(template).expect("write");
        if mode.sync_each() {
            file.sync_data().expect("fdatasync");
        }
        in_file += len;
        since_drain += len;
        if since_drain >= DRAIN_BYTES {
            since_drain = 0;
            if mode == StdMode::Write {
                watch.pause();
            }
            file.sync_data().expect("fdatasync");
            if in_file >= RECREATE_BYTES {
                watch.pause();
                reset_std_file(&file, mode);
                in_file = 0;
            }
            watch.resume();
        }
    }
    if mode == StdMode::WriteSustained {
        file.sync_data().expect("fdatasync");
    }
    let elapsed = watch.stop();
    drop(file);
    std::fs::remove_file(&path).expect("removing the baseline file");
    elapsed
}

fn bench_append(c: &mut Criterion) {
    let root = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("append");
    g.sample_size(20);
    for size in [KIB, 16 * KIB] {
        // 1 KiB: one record; 16 KiB: sixteen records of about 1 KiB.
        let template = batch_of_size(size / KIB, size);
        g.throughput(Throughput::Bytes(size as u64));
        let param = human(size);
        let log_benches = [
            ("corestream_queued(acks=1)", LogMode::Queued),
            ("corestream_queued_sustained", LogMode::QueuedSustained),
            ("corestream_synced(acks=all)", LogMode::Synced),
        ];
        for (name, mode) in log_benches {
            g.bench_function(BenchmarkId::new(name, &param), |b| {
                b.iter_custom(|iters| corestream_append(root.path(), &template, iters, mode))
            });
        }
        let std_benches = [
            ("std_write", StdMode::Write),
            ("std_write_sustained", StdMode::WriteSustained),
            ("std_write+fdatasync_each", StdMode::WriteFdatasyncEach),
            ("std_prealloc_write+fdatasync_each", StdMode::PreallocWriteFdatasyncEach),
        ];
        for (name, mode) in std_benches {
            g.bench_function(BenchmarkId::new(name, &param), |b| {
                b.iter_custom(|iters| std_append(root.path(), &template, iters, mode))
            });
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 4. Index lookup
// ---------------------------------------------------------------------------------------------

/// A full 1 GiB segment with the default `index.interval.bytes` (4096): 262,144 entries;
/// 250k as the brief says. Each indexed batch holds 16 records.
const INDEX_ENTRIES: u32 = 250_000;
const LOOKUP_TARGETS: usize = 4096;

fn bench_index_lookup(c: &mut Criterion) {
    let entries: Vec<(u32, u32)> = (0..INDEX_ENTRIES).map(|i| (i * 16, i * 4096)).collect();
    let mut index = OffsetIndex::default();
    for &(o, p) in &entries {
        index.append(o, p);
    }
    assert_eq!(index.len(), INDEX_ENTRIES as usize);
    let tree: BTreeMap<u32, u32> = entries.iter().copied().collect();
    let mut rng = Rng(corestream::util::SplitMix64::new(42));
    let targets: Vec<u32> =
        (0..LOOKUP_TARGETS).map(|_| (rng.next() % (u64::from(INDEX_ENTRIES) * 16)) as u32).collect();

    let linear = |t: u32| entries.iter().take_while(|e| e.0 <= t).last().map_or(0, |e| e.1);
    let btree = |t: u32| tree.range(..=t).next_back().map_or(0, |(_, &p)| p);
    for &t in targets.iter().take(64) {
        let want = index.lookup(t);
        assert_eq!(want, (t / 16) * 4096);
        assert_eq!(linear(t), want);
        assert_eq!(btree(t), want);
    }

    let mut g = c.benchmark_group("index_lookup");
    // Bytes would mean nothing here: one element is one lookup.
    g.throughput(Throughput::Elements(1));
    let param = "250k_entries";
    g.bench_function(BenchmarkId::new("OffsetIndex::lookup", param), |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % LOOKUP_TARGETS;
            index.lookup(black_box(targets[i]))
        })
    });
    g.bench_function(BenchmarkId::new("linear_scan", param), |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % LOOKUP_TARGETS;
            linear(black_box(targets[i]))
        })
    });
    g.bench_function(BenchmarkId::new("BTreeMap::range", param), |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % LOOKUP_TARGETS;
            btree(black_box(targets[i]))
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 5. Fetch read
// ---------------------------------------------------------------------------------------------

/// Batches of the fetch log: 16 KiB, 16 records each.
const FETCH_BATCH_BYTES: usize = 16 * KIB;
const FETCH_BATCH_RECORDS: i64 = 16;
/// 12 MiB: the newest 8 MiB (`TAIL_CACHE_BYTES_MAX`) stay in memory, the oldest 4 MiB do not.
const FETCH_LOG_BATCHES: usize = 768;
const FETCH_MAX_BYTES: usize = MIB;
/// Reads from disk start at one of the first 128 batches (their 1 MiB ends before batch 192,
/// well below the tail cache); reads from the tail start at one of batches 512..640.
const DISK_FIRST_BATCHES: usize = 128;
const TAIL_FIRST_BATCH: usize = 512;

fn disk_offset(i: u64) -> i64 {
    (i % DISK_FIRST_BATCHES as u64) as i64 * FETCH_BATCH_RECORDS
}

fn tail_offset(i: u64) -> i64 {
    (TAIL_FIRST_BATCH as i64 + (i % 128) as i64) * FETCH_BATCH_RECORDS
}

fn bench_fetch_read(c: &mut Criterion) {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("fetch-log");
    let template = batch_of_size(FETCH_BATCH_RECORDS as usize, FETCH_BATCH_BYTES);
    let log = block_on(async {
        let log = PartitionLog::open(dir.clone(), LogConfig::with_segment_bytes(SEGMENT_BYTES))
            .await
            .expect("opening the log");
        for _ in 0..FETCH_LOG_BATCHES {
            log.append(template.clone(), 0, Durability::Queued).await.expect("append");
        }
        // Once everything is written the tail cache sheds all but the newest 8 MiB.
        log.wait_durable(log.log_end_offset()).await.expect("sync");
        log
    });
    let segment = dir.join(format!("{:020}.log", 0));
    let file = File::open(&segment).expect("opening the segment with std");
    let pread = |i: u64, buf: &mut Vec<u8>| {
        let pos = (i % DISK_FIRST_BATCHES as u64) * FETCH_BATCH_BYTES as u64;
        file.read_exact_at(buf, pos).expect("pread");
    };

    // Both paths return the same 64 batches: the log's bytes are ours, stamped with offsets.
    let (from_tail, from_disk) = block_on(async {
        let t = log.read(tail_offset(0), FETCH_MAX_BYTES).await.expect("read").records;
        let d = log.read(disk_offset(0), FETCH_MAX_BYTES).await.expect("read").records;
        (t, d)
    });
    assert_eq!(from_tail.len(), FETCH_MAX_BYTES);
    assert_eq!(from_disk.len(), FETCH_MAX_BYTES);
    assert_eq!(BatchHeader::parse(&from_tail).expect("header").base_offset, tail_offset(0));
    assert_eq!(BatchHeader::parse(&from_disk).expect("header").base_offset, 0);
    let mut buf = vec![0u8; FETCH_MAX_BYTES];
    pread(0, &mut buf); // also brings the file into the page cache
    assert_eq!(&buf[..], &from_disk[..]);
    for i in 0..DISK_FIRST_BATCHES as u64 {
        pread(i, &mut buf);
    }

    let mut g = c.benchmark_group("fetch_read");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(FETCH_MAX_BYTES as u64));
    let param = "1MiB";
    g.bench_function(BenchmarkId::new("corestream_tail_cache", param), |b| {
        b.iter_custom(|iters| {
            block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(log.read(tail_offset(i), FETCH_MAX_BYTES).await.expect("read"));
                }
                start.elapsed()
            })
        })
    });
    g.bench_function(BenchmarkId::new("corestream_disk_dma", param), |b| {
        b.iter_custom(|iters| {
            block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(log.read(disk_offset(i), FETCH_MAX_BYTES).await.expect("read"));
                }
                start.elapsed()
            })
        })
    });
    g.bench_function(BenchmarkId::new("std_pread_page_cache", param), |b| {
        let mut i = 0u64;
        b.iter(|| {
            // A fresh buffer per read, as the log's reads return a fresh `Bytes`.
            let mut buf = vec![0u8; FETCH_MAX_BYTES];
            i += 1;
            pread(black_box(i), &mut buf);
            buf
        })
    });
    g.finish();
    drop(file);
    block_on(async { log.close().await.expect("closing the log") });
}

criterion_group!(
    benches,
    bench_frame_decode,
    bench_batch_validate,
    bench_append,
    bench_index_lookup,
    bench_fetch_read
);
criterion_main!(benches);
