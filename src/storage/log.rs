//! One partition's log: segments on disk written with DMA, an in-memory tail,
//! a background flusher doing group commit, reads, recovery and retention.
//!
//! # Offsets
//! `log_start <= high_watermark <= log_end`, asserted where they move. On a
//! single node the high watermark equals the log end offset after every
//! append; they are kept apart for replication.
//!
//! # Write path
//! [`PartitionLog::append`] is synchronous up to the point where the batch has
//! its offset: it stamps the batch, puts it in the in-memory tail (where
//! fetches find it at once) and in the pending queue, and rolls to a new
//! segment when the active one is full or old. So appends keep the order in
//! which they were called, without a lock. The flusher task then writes the
//! pending bytes with O_DIRECT: each write starts at the aligned start of the
//! partial tail block and rewrites it, files are preallocated in steps, and
//! when a caller waits for durability it issues one `fdatasync` covering every
//! batch written meanwhile (group commit). A rolled segment is synced, trimmed
//! to its length and gets its index files before the next segment is written.
//!
//! # Recovery
//! Closed segments with index files were finalized after an fdatasync and are
//! trusted. After a clean shutdown (marker file `clean.shutdown`) the active
//! segment's files are trusted too. Otherwise the active segment and any
//! segment without indexes is scanned: every batch's length, CRC and offset
//! continuity is checked, the first bad byte and everything after it is
//! truncated, and the indexes are rebuilt.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::io::{DmaFile, OpenOptions};

use super::index::{OffsetIndex, TimeIndex};
use crate::config::{LogConfig, TimestampType};
use crate::limits::{
    DMA_ALIGNMENT_BYTES, DMA_READ_BYTES_MAX, PREALLOCATE_STEP_BYTES, TAIL_CACHE_BYTES_MAX,
    WRITE_BYTES_MAX,
};
use crate::protocol::batch::{self, BatchHeader, BATCH_HEADER_BYTES};
use crate::util::{now_ms, LocalNotify};

/// Bytes appended and not yet written past which acks=1 producers wait.
pub const PENDING_BYTES_MAX: usize = 32 * 1024 * 1024;
const CLEAN_MARKER: &str = "clean.shutdown";
const LOG_START_FILE: &str = "log-start-offset";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("storage error: {0}")]
    Io(String),
    #[error("the log is closed")]
    Closed,
}

fn io_err(context: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Io(format!("{context}: {e}"))
}

/// How long an append waits before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Return once the batch has its offset and is queued for writing (acks=0/1).
    Queued,
    /// Return once the batch is on stable storage (acks=all).
    Synced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The log append time stamped into the batch, or -1 for CreateTime topics.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// What a read found.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Whole batches, starting with the one containing the requested offset.
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

struct CachedBatch {
    base_offset: i64,
    last_offset: i64,
    bytes: Bytes,
}

fn segment_file(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

struct Segment {
    base_offset: i64,
    /// Opened by the flusher on first write; readers only need it for written bytes.
    file: Option<Rc<DmaFile>>,
    /// Logical bytes appended, written or not.
    size: u64,
    /// Bytes whose write has completed.
    written: u64,
    /// The bytes from the last aligned position up to `written`: rewritten with the next write.
    tail_block: Vec<u8>,
    allocated: u64,
    next_offset: i64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    created_ms: i64,
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index: u64,
    /// No more appends go here.
    closed: bool,
    /// Synced, trimmed and indexed on disk.
    finalized: bool,
}

impl Segment {
    fn new(base_offset: i64) -> Segment {
        Segment {
            base_offset,
            file: None,
            size: 0,
            written: 0,
            tail_block: Vec::new(),
            allocated: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            created_ms: now_ms(),
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            closed: false,
            finalized: false,
        }
    }

    /// Accounts for a batch placed at the end of this segment.
    fn account(&mut self, h: &BatchHeader, len: u64, index_interval_bytes: u64) {
        let position = self.size;
        let rel = (h.base_offset - self.base_offset) as u32;
        if self.index.is_empty() || self.bytes_since_index >= index_interval_bytes {
            if position > 0 {
                self.index.append(rel, position as u32);
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += len;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.last_offset();
            self.time_index.append(h.max_timestamp, rel);
        }
        self.size += len;
        self.next_offset = h.last_offset() + 1;
    }
}

struct State {
    segments: BTreeMap<i64, Segment>,
    log_start: i64,
    high_watermark: i64,
    log_end: i64,
    /// Batches appended and not yet written, oldest first, with their segment.
    pending: VecDeque<(i64, Bytes, i64)>,
    pending_bytes: usize,
    cache: VecDeque<CachedBatch>,
    cache_bytes: usize,
    /// Every offset below this has been written to its segment file.
    written_offset: i64,
    /// Every offset below this is on stable storage.
    durable_offset: i64,
    /// Some caller waits for durability up to (excluding) this offset.
    sync_wanted: i64,
    flusher_running: bool,
    unsynced_messages: i64,
    last_sync_ms: i64,
    failed: Option<LogError>,
    closed: bool,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
}

impl State {
    fn assert_offsets(&self) {
        assert!(
            self.log_start <= self.high_watermark && self.high_watermark <= self.log_end,
            "offsets out of order: start {} hw {} end {}",
            self.log_start,
            self.high_watermark,
            self.log_end
        );
        assert!(self.durable_offset <= self.written_offset && self.written_offset <= self.log_end);
    }

    fn active(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has an active segment")
    }
}

/// One partition's log. Lives on the core that owns the partition.
pub struct PartitionLog {
    dir: PathBuf,
    cfg: RefCell<LogConfig>,
    st: RefCell<State>,
    /// Fires when the high watermark moves (long-polling fetches wait on it).
    pub data_arrived: LocalNotify,
    /// Fires when the written or durable offset moves, or the log fails.
    progress: LocalNotify,
}

impl PartitionLog {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_start_offset(&self) -> i64 {
        self.st.borrow().log_start
    }

    pub fn log_end_offset(&self) -> i64 {
        self.st.borrow().log_end
    }

    pub fn high_watermark(&self) -> i64 {
        self.st.borrow().high_watermark
    }

    pub fn size_bytes(&self) -> u64 {
        self.st.borrow().segments.values().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.st.borrow().segments.len()
    }

    pub fn config(&self) -> LogConfig {
        self.cfg.borrow().clone()
    }

    pub fn set_config(&self, cfg: LogConfig) {
        *self.cfg.borrow_mut() = cfg;
    }

    /// The largest timestamp in the log and the offset of the batch holding it.
    pub fn max_timestamp(&self) -> (i64, i64) {
        let st = self.st.borrow();
        (st.max_timestamp, st.offset_of_max_timestamp)
    }

    /// Opens (creating if needed) the log in `dir`, recovering it if it was not shut down cleanly.
    pub async fn open(dir: PathBuf, cfg: LogConfig) -> Result<Rc<PartitionLog>, LogError> {
        std::fs::create_dir_all(&dir).map_err(|e| io_err("creating partition directory", e))?;
        let clean = dir.join(CLEAN_MARKER).exists();
        let mut bases: Vec<i64> = std::fs::read_dir(&dir)
            .map_err(|e| io_err("listing partition directory", e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .collect();
        bases.sort_unstable();
        let checkpoint_start: Option<i64> = std::fs::read_to_string(dir.join(LOG_START_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok());

        let mut segments: BTreeMap<i64, Segment> = BTreeMap::new();
        let mut truncated_at: Option<usize> = None;
        for (i, &base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let next_base = bases.get(i + 1).copied();
            let seg = load_segment(&dir, base, next_base, is_last, clean, &cfg).await?;
            let short = seg.1;
            segments.insert(base, seg.0);
            if short && !is_last {
                truncated_at = Some(i);
                break;
            }
        }
        if let Some(i) = truncated_at {
            // A segment before the last one was torn: nothing after it can be trusted.
            for &base in &bases[i + 1..] {
                tracing::warn!(dir = %dir.display(), base, "removing segment after a torn one");
                for ext in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(segment_file(&dir, base, ext));
                }
            }
        }
        // The active segment's index files describe it only until it is written again.
        if let Some((&base, _)) = segments.iter().next_back() {
            for ext in ["index", "timeindex"] {
                let _ = std::fs::remove_file(segment_file(&dir, base, ext));
            }
        }
        if clean {
            std::fs::remove_file(dir.join(CLEAN_MARKER)).map_err(|e| io_err("removing clean marker", e))?;
        }
        if segments.is_empty() {
            let base = checkpoint_start.unwrap_or(0).max(0);
            segments.insert(base, Segment::new(base));
        }
        let first_base = *segments.keys().next().expect("non-empty");
        let log_end = segments.values().next_back().map(|s| s.next_offset).expect("non-empty");
        let log_start = checkpoint_start.unwrap_or(first_base).clamp(first_base, log_end);
        let (mut max_ts, mut max_ts_off) = (-1, first_base);
        for s in segments.values() {
            if s.max_timestamp > max_ts {
                max_ts = s.max_timestamp;
                max_ts_off = s.offset_of_max_timestamp;
            }
        }
        let st = State {
            segments,
            log_start,
            high_watermark: log_end,
            log_end,
            pending: VecDeque::new(),
            pending_bytes: 0,
            cache: VecDeque::new(),
            cache_bytes: 0,
            written_offset: log_end,
            durable_offset: log_end,
            sync_wanted: log_end,
            flusher_running: false,
            unsynced_messages: 0,
            last_sync_ms: now_ms(),
            failed: None,
            closed: false,
            max_timestamp: max_ts,
            offset_of_max_timestamp: max_ts_off,
        };
        st.assert_offsets();
        Ok(Rc::new(PartitionLog {
            dir,
            cfg: RefCell::new(cfg),
            st: RefCell::new(st),
            data_arrived: LocalNotify::default(),
            progress: LocalNotify::default(),
        }))
    }

    /// Appends one validated batch, stamping its offset, leader epoch and (for
    /// LogAppendTime topics) its timestamp, then waits as `durability` asks.
    pub async fn append(
        self: &Rc<Self>,
        mut batch: BytesMut,
        leader_epoch: i32,
        durability: Durability,
    ) -> Result<AppendInfo, LogError> {
        let info = self.append_now(&mut batch, leader_epoch)?;
        match durability {
            Durability::Synced => self.wait_durable(info.last_offset + 1).await?,
            Durability::Queued => self.wait_pending_below(PENDING_BYTES_MAX).await?,
        }
        Ok(info)
    }

    /// The synchronous part of an append: after it returns the batch has its offset and is
    /// readable. Callers that must keep order call this without awaiting in between.
    pub fn append_now(self: &Rc<Self>, batch: &mut BytesMut, leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let cfg = self.cfg.borrow().clone();
        let mut st = self.st.borrow_mut();
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        if st.closed {
            return Err(LogError::Closed);
        }
        let header = BatchHeader::parse(batch).map_err(|e| io_err("appending an unvalidated batch", e))?;
        let count = header.last_offset_delta as i64 + 1;
        let base_offset = st.log_end;
        let now = now_ms();
        let log_append_time = (cfg.timestamp_type == TimestampType::LogAppendTime).then_some(now);
        batch::stamp(batch, base_offset, leader_epoch, log_append_time);
        let header = BatchHeader::parse(batch).map_err(|e| io_err("re-reading a stamped batch", e))?;
        let len = batch.len() as u64;

        // Roll when the active segment is full, old, or its relative offsets would overflow.
        let active = st.active();
        let roll = active.size > 0
            && (active.size + len > cfg.segment_bytes
                || now - active.created_ms >= cfg.segment_ms
                || base_offset + count - active.base_offset > i32::MAX as i64);
        if roll {
            active.closed = true;
            st.segments.insert(base_offset, Segment::new(base_offset));
        }
        let seg_base = {
            let active = st.active();
            active.account(&header, len, cfg.index_interval_bytes);
            active.base_offset
        };
        let bytes = std::mem::take(batch).freeze();
        st.log_end = header.last_offset() + 1;
        st.high_watermark = st.log_end;
        if header.max_timestamp > st.max_timestamp {
            st.max_timestamp = header.max_timestamp;
            st.offset_of_max_timestamp = header.last_offset();
        }
        st.pending_bytes += bytes.len();
        let end = st.log_end;
        st.pending.push_back((seg_base, bytes.clone(), end));
        st.cache_bytes += bytes.len();
        st.cache.push_back(CachedBatch { base_offset, last_offset: header.last_offset(), bytes });
        st.unsynced_messages += count;
        st.assert_offsets();
        let info = AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            log_append_time: log_append_time.unwrap_or(-1),
            log_start_offset: st.log_start,
        };
        let start = !st.flusher_running;
        st.flusher_running = true;
        drop(st);
        if start {
            let me = self.clone();
            glommio::spawn_local(async move { me.flusher().await }).detach();
        }
        self.data_arrived.notify_all();
        Ok(info)
    }

    /// Waits until every offset below `end` is on stable storage.
    pub async fn wait_durable(self: &Rc<Self>, end: i64) -> Result<(), LogError> {
        loop {
            let listener = self.progress.listen();
            {
                let mut st = self.st.borrow_mut();
                if let Some(e) = &st.failed {
                    return Err(e.clone());
                }
                if st.durable_offset >= end {
                    return Ok(());
                }
                st.sync_wanted = st.sync_wanted.max(end);
                if !st.flusher_running {
                    st.flusher_running = true;
                    let me = self.clone();
                    glommio::spawn_local(async move { me.flusher().await }).detach();
                }
            }
            listener.await;
        }
    }

    async fn wait_pending_below(&self, limit: usize) -> Result<(), LogError> {
        loop {
            let listener = self.progress.listen();
            {
                let st = self.st.borrow();
                if let Some(e) = &st.failed {
                    return Err(e.clone());
                }
                if st.pending_bytes <= limit {
                    return Ok(());
                }
            }
            listener.await;
        }
    }

    fn fail(&self, e: LogError) {
        tracing::error!(dir = %self.dir.display(), error = %e, "partition log failed; refusing further writes");
        let mut st = self.st.borrow_mut();
        st.failed = Some(e);
        st.flusher_running = false;
        drop(st);
        self.progress.notify_all();
    }

    /// Writes pending batches, finalizes rolled segments and syncs when asked, until idle.
    async fn flusher(self: Rc<Self>) {
        loop {
            match self.flush_step().await {
                Ok(true) => continue,
                Ok(false) => {
                    let mut st = self.st.borrow_mut();
                    // Re-check under the same borrow that clears the flag: no work can slip in between.
                    if st.pending.is_empty() && st.sync_wanted <= st.durable_offset && !has_unfinalized(&st) {
                        st.flusher_running = false;
                        return;
                    }
                }
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
    }

    /// One unit of flusher work. Returns whether there may be more.
    async fn flush_step(self: &Rc<Self>) -> Result<bool, LogError> {
        let cfg = self.cfg.borrow().clone();
        // 1. A rolled segment whose bytes are all written gets finalized before anything newer.
        let to_finalize = {
            let st = self.st.borrow();
            let next_pending_seg = st.pending.front().map(|p| p.0);
            st.segments
                .values()
                .find(|s| s.closed && !s.finalized && next_pending_seg.is_none_or(|p| p > s.base_offset))
                .map(|s| s.base_offset)
        };
        if let Some(base) = to_finalize {
            self.finalize_segment(base).await?;
            return Ok(true);
        }
        // 2. Write the next run of pending batches of one segment.
        let run = {
            let mut st = self.st.borrow_mut();
            let Some(&(seg_base, _, _)) = st.pending.front() else {
                drop(st);
                return self.sync_if_wanted(&cfg, false).await;
            };
            let mut chunks = Vec::new();
            let mut total = 0usize;
            let mut end_offset = 0;
            while let Some((s, b, _)) = st.pending.front() {
                if *s != seg_base || (total > 0 && total + b.len() > WRITE_BYTES_MAX) {
                    break;
                }
                let (_, b, end) = st.pending.pop_front().expect("front exists");
                total += b.len();
                end_offset = end;
                chunks.push(b);
            }
            (seg_base, chunks, total, end_offset)
        };
        let (seg_base, chunks, total, end_offset) = run;
        self.write_run(seg_base, &chunks, total).await?;
        {
            let mut st = self.st.borrow_mut();
            st.pending_bytes -= total;
            st.written_offset = end_offset;
            // The in-memory tail may now shed written batches beyond its budget.
            while st.cache_bytes > TAIL_CACHE_BYTES_MAX {
                match st.cache.front() {
                    Some(c) if c.last_offset < st.written_offset => {
                        let c = st.cache.pop_front().expect("front exists");
                        st.cache_bytes -= c.bytes.len();
                    }
                    _ => break,
                }
            }
        }
        self.progress.notify_all();
        self.sync_if_wanted(&cfg, true).await
    }

    async fn sync_if_wanted(self: &Rc<Self>, cfg: &LogConfig, wrote: bool) -> Result<bool, LogError> {
        let (file, target) = {
            let mut st = self.st.borrow_mut();
            let policy = st.unsynced_messages >= cfg.flush_messages
                || (cfg.flush_ms != i64::MAX && now_ms() - st.last_sync_ms >= cfg.flush_ms);
            let wanted = st.sync_wanted > st.durable_offset;
            if !(wanted || (policy && st.written_offset > st.durable_offset)) {
                return Ok(wrote);
            }
            let target = st.written_offset;
            let active = st.active();
            (active.file.clone(), target)
        };
        if let Some(file) = file {
            file.fdatasync().await.map_err(|e| io_err("fdatasync", e))?;
        }
        let mut st = self.st.borrow_mut();
        st.durable_offset = st.durable_offset.max(target);
        st.unsynced_messages = 0;
        st.last_sync_ms = now_ms();
        st.assert_offsets();
        drop(st);
        self.progress.notify_all();
        Ok(true)
    }

    async fn open_segment_file(&self, base: i64) -> Result<Rc<DmaFile>, LogError> {
        let path = segment_file(&self.dir, base, "log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(&path)
            .await
            .map_err(|e| io_err(&format!("opening {}", path.display()), e))?;
        Ok(Rc::new(file))
    }

    /// Writes `chunks` (all for segment `seg_base`) after the segment's written bytes.
    async fn write_run(&self, seg_base: i64, chunks: &[Bytes], total: usize) -> Result<(), LogError> {
        let existing = self.st.borrow().segments.get(&seg_base).and_then(|s| s.file.clone());
        let file = match existing {
            Some(f) => f,
            None => {
                let f = self.open_segment_file(seg_base).await?;
                if let Some(s) = self.st.borrow_mut().segments.get_mut(&seg_base) {
                    s.file = Some(f.clone());
                }
                f
            }
        };
        let (pos, tail, allocated) = {
            let st = self.st.borrow();
            let seg = st.segments.get(&seg_base).ok_or(LogError::Closed)?;
            (seg.written - seg.tail_block.len() as u64, seg.tail_block.clone(), seg.allocated)
        };
        debug_assert_eq!(pos % DMA_ALIGNMENT_BYTES, 0);
        let data_len = tail.len() + total;
        let buf_len = align_up(data_len as u64) as usize;
        if pos + buf_len as u64 > allocated {
            let new_alloc = align_up_to(pos + buf_len as u64, PREALLOCATE_STEP_BYTES);
            file.pre_allocate(new_alloc, true).await.map_err(|e| io_err("preallocating", e))?;
            if let Some(s) = self.st.borrow_mut().segments.get_mut(&seg_base) {
                s.allocated = new_alloc;
            }
        }
        let mut buf = file.alloc_dma_buffer(buf_len);
        {
            let out = buf.as_bytes_mut();
            let mut at = 0;
            out[..tail.len()].copy_from_slice(&tail);
            at += tail.len();
            for c in chunks {
                out[at..at + c.len()].copy_from_slice(c);
                at += c.len();
            }
            out[at..].fill(0);
        }
        // Keep the new partial tail block before the buffer is handed to the kernel.
        let new_tail_len = (pos + data_len as u64) % DMA_ALIGNMENT_BYTES;
        let new_tail = buf.as_bytes()[data_len - new_tail_len as usize..data_len].to_vec();
        let n = file.write_at(buf, pos).await.map_err(|e| io_err("writing segment", e))?;
        if n < buf_len {
            return Err(LogError::Io(format!("short write: {n} of {buf_len} bytes")));
        }
        let mut st = self.st.borrow_mut();
        if let Some(s) = st.segments.get_mut(&seg_base) {
            s.written += total as u64;
            s.tail_block = new_tail;
        }
        Ok(())
    }

    /// Syncs a rolled segment, trims its preallocated tail and writes its index files.
    async fn finalize_segment(&self, base: i64) -> Result<(), LogError> {
        let (file, size, index, time_index) = {
            let mut st = self.st.borrow_mut();
            let seg = st.segments.get_mut(&base).ok_or(LogError::Closed)?;
            // Like Kafka, the final time index entry records the segment's max timestamp.
            if seg.max_timestamp >= 0 {
                let rel = (seg.offset_of_max_timestamp - seg.base_offset) as u32;
                seg.time_index.append(seg.max_timestamp, rel);
            }
            (seg.file.clone(), seg.size, seg.index.encode(), seg.time_index.encode())
        };
        if let Some(file) = file {
            file.fdatasync().await.map_err(|e| io_err("fdatasync", e))?;
            file.truncate(size).await.map_err(|e| io_err("trimming segment", e))?;
        }
        write_small_file(segment_file(&self.dir, base, "index"), index).await?;
        write_small_file(segment_file(&self.dir, base, "timeindex"), time_index).await?;
        if let Some(s) = self.st.borrow_mut().segments.get_mut(&base) {
            s.finalized = true;
        }
        Ok(())
    }

    /// Reads whole batches starting with the one holding `offset`, up to about
    /// `max_bytes` (always at least one batch when there is data).
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        let (mut result, disk) = {
            let st = self.st.borrow();
            let result = ReadResult {
                records: Bytes::new(),
                high_watermark: st.high_watermark,
                log_start_offset: st.log_start,
                log_end_offset: st.log_end,
            };
            if offset < st.log_start || offset > st.log_end {
                return Err(LogError::OffsetOutOfRange { offset, start: st.log_start, end: st.log_end });
            }
            if offset >= st.high_watermark {
                return Ok(result);
            }
            if st.cache.front().is_some_and(|c| c.base_offset <= offset) {
                let mut out = BytesMut::new();
                let first = st.cache.partition_point(|c| c.last_offset < offset);
                for c in st.cache.iter().skip(first) {
                    if c.base_offset >= st.high_watermark || (!out.is_empty() && out.len() + c.bytes.len() > max_bytes) {
                        break;
                    }
                    out.extend_from_slice(&c.bytes);
                }
                let mut result = result;
                result.records = out.freeze();
                return Ok(result);
            }
            // From disk: the segment holding `offset` and where to start scanning in it.
            let Some(seg) = st.segments.range(..=offset).next_back().map(|(_, s)| s) else {
                return Ok(result);
            };
            let (seg, offset) = if seg.next_offset <= offset {
                match st.segments.range(offset..).next() {
                    Some((_, s)) => (s, offset.max(s.base_offset)),
                    None => return Ok(result),
                }
            } else {
                (seg, offset)
            };
            let rel = (offset - seg.base_offset).max(0) as u32;
            let position = seg.index.lookup(rel) as u64;
            (result, seg.file.clone().map(|f| (f, position, seg.written)))
        };
        let Some((file, position, end)) = disk else {
            return Ok(result);
        };
        result.records = read_batches(&file, position, end, offset, max_bytes).await?;
        Ok(result)
    }

    /// The first offset whose batch holds a timestamp >= `timestamp`, with that batch's max timestamp.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let start = {
            let st = self.st.borrow();
            let seg = st.segments.values().find(|s| s.max_timestamp >= timestamp);
            match seg {
                None => return Ok(None),
                Some(s) => (s.base_offset + s.time_index.lookup(timestamp) as i64).max(st.log_start),
            }
        };
        let mut offset = start;
        loop {
            let r = self.read(offset, 1024 * 1024).await?;
            if r.records.is_empty() {
                return Ok(None);
            }
            let mut at = 0usize;
            while let Some(rest) = r.records.get(at..) {
                let Ok(h) = BatchHeader::parse(rest) else { break };
                if h.last_offset() >= offset && h.max_timestamp >= timestamp {
                    let found = first_record_at_or_after(rest.get(..h.total_bytes()).unwrap_or(rest), &h, timestamp);
                    return Ok(Some((found.0.max(offset), found.1)));
                }
                offset = h.last_offset() + 1;
                at += h.total_bytes();
            }
        }
    }

    /// Moves the log start offset forward to `offset` (DeleteRecords) and drops whole
    /// segments below it. Returns the new log start offset.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        {
            let mut st = self.st.borrow_mut();
            if offset < 0 || offset > st.high_watermark {
                return Err(LogError::OffsetOutOfRange { offset, start: st.log_start, end: st.high_watermark });
            }
            if offset > st.log_start {
                st.log_start = offset;
                st.assert_offsets();
            }
        }
        self.drop_segments(|_, _| false).await
    }

    /// Applies `retention.ms` and `retention.bytes` to closed segments.
    pub async fn apply_retention(&self, now: i64) -> Result<i64, LogError> {
        let cfg = self.cfg.borrow().clone();
        let total: u64 = self.size_bytes();
        let mut excess: i64 = if cfg.retention_bytes >= 0 { total as i64 - cfg.retention_bytes } else { 0 };
        self.drop_segments(move |seg, _| {
            let by_time = cfg.retention_ms >= 0
                && seg.max_timestamp.max(seg_mtime_fallback(seg)) < now - cfg.retention_ms;
            let by_size = excess >= seg.size as i64;
            if by_time || by_size {
                excess -= seg.size as i64;
                true
            } else {
                false
            }
        })
        .await
    }

    /// Removes finalized segments from the front while `expired` says so or they lie wholly below the log start.
    async fn drop_segments(&self, mut expired: impl FnMut(&Segment, i64) -> bool) -> Result<i64, LogError> {
        let (removed, log_start) = {
            let mut st = self.st.borrow_mut();
            let mut removed = Vec::new();
            loop {
                let mut iter = st.segments.values();
                let (Some(first), Some(second)) = (iter.next(), iter.next()) else { break };
                if !first.finalized {
                    break;
                }
                let below_start = second.base_offset <= st.log_start;
                if !(below_start || expired(first, st.log_start)) {
                    break;
                }
                let base = first.base_offset;
                let next_base = second.base_offset;
                let seg = st.segments.remove(&base).expect("present");
                st.log_start = st.log_start.max(next_base);
                removed.push(seg);
            }
            // The tail cache never holds offsets below the log start.
            while st.cache.front().is_some_and(|c| c.last_offset < st.log_start) {
                let c = st.cache.pop_front().expect("front exists");
                st.cache_bytes -= c.bytes.len();
            }
            st.assert_offsets();
            (removed, st.log_start)
        };
        write_small_file(self.dir.join(LOG_START_FILE), format!("{log_start}\n").into_bytes()).await?;
        for seg in removed {
            let dir = self.dir.clone();
            let base = seg.base_offset;
            drop(seg);
            glommio::executor()
                .spawn_blocking(move || {
                    for ext in ["log", "index", "timeindex"] {
                        let _ = std::fs::remove_file(segment_file(&dir, base, ext));
                    }
                })
                .await;
        }
        Ok(log_start)
    }

    /// Writes everything, syncs, trims the active segment and leaves a clean-shutdown marker.
    pub async fn close(self: &Rc<Self>) -> Result<(), LogError> {
        let end = self.log_end_offset();
        self.wait_durable(end).await?;
        // Wait for the flusher to finish finalizing rolled segments.
        loop {
            let listener = self.progress.listen();
            let busy = {
                let mut st = self.st.borrow_mut();
                if let Some(e) = &st.failed {
                    return Err(e.clone());
                }
                let busy = st.flusher_running;
                if !busy {
                    st.closed = true;
                }
                busy
            };
            if !busy {
                break;
            }
            futures_lite::future::or(listener, glommio::timer::sleep(std::time::Duration::from_millis(5))).await;
        }
        let (base, file, size, index, time_index) = {
            let mut st = self.st.borrow_mut();
            let seg = st.active();
            (seg.base_offset, seg.file.clone(), seg.size, seg.index.encode(), seg.time_index.encode())
        };
        if let Some(file) = file {
            file.truncate(size).await.map_err(|e| io_err("trimming segment", e))?;
            file.fdatasync().await.map_err(|e| io_err("fdatasync", e))?;
        }
        write_small_file(segment_file(&self.dir, base, "index"), index).await?;
        write_small_file(segment_file(&self.dir, base, "timeindex"), time_index).await?;
        write_small_file(self.dir.join(CLEAN_MARKER), Vec::new()).await?;
        Ok(())
    }

    /// Stops the log and removes its directory (topic deletion).
    pub async fn delete(self: &Rc<Self>) {
        {
            let mut st = self.st.borrow_mut();
            st.closed = true;
            st.failed = Some(LogError::Closed);
        }
        self.progress.notify_all();
        self.data_arrived.notify_all();
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || {
                let doomed = dir.with_extension(format!("deleted-{}", now_ms()));
                if std::fs::rename(&dir, &doomed).is_ok() {
                    let _ = std::fs::remove_dir_all(&doomed);
                } else {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            })
            .await;
    }
}

fn has_unfinalized(st: &State) -> bool {
    st.segments.values().any(|s| s.closed && !s.finalized)
}

fn seg_mtime_fallback(seg: &Segment) -> i64 {
    if seg.max_timestamp < 0 {
        seg.created_ms
    } else {
        -1
    }
}

fn align_up(v: u64) -> u64 {
    align_up_to(v, DMA_ALIGNMENT_BYTES)
}

fn align_up_to(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Writes a small file whole and syncs it (index files, checkpoints, markers).
async fn write_small_file(path: PathBuf, data: Vec<u8>) -> Result<(), LogError> {
    let shown = path.display().to_string();
    glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(&format!("writing {shown}"), e))
}

/// Reads bytes `[pos, end)` of a segment file in DMA-sized pieces.
async fn read_range(file: &DmaFile, pos: u64, end: u64, out: &mut BytesMut) -> Result<(), LogError> {
    let mut at = pos;
    while at < end {
        let n = ((end - at) as usize).min(DMA_READ_BYTES_MAX);
        let r = file.read_at(at, n).await.map_err(|e| io_err("reading segment", e))?;
        if r.is_empty() {
            return Err(LogError::Io(format!("segment ends at {at}, expected {end}")));
        }
        out.extend_from_slice(&r);
        at += r.len() as u64;
    }
    Ok(())
}

/// Reads whole batches from `position` up to `end` in a segment, skipping
/// batches wholly below `offset`, until `max_bytes` (at least one batch).
async fn read_batches(file: &DmaFile, position: u64, end: u64, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
    let mut buf = BytesMut::new();
    let mut pos = position;
    let mut out = BytesMut::new();
    loop {
        // Make sure a whole header is buffered, then the whole batch.
        if buf.len() < BATCH_HEADER_BYTES {
            if pos >= end {
                break;
            }
            let want = (end - pos).min((max_bytes.max(64 * 1024) as u64).min(DMA_READ_BYTES_MAX as u64));
            read_range(file, pos, pos + want, &mut buf).await?;
            pos += want;
            continue;
        }
        let h = BatchHeader::parse(&buf).map_err(|e| io_err("corrupt batch header on disk", e))?;
        let total = h.total_bytes();
        if buf.len() < total {
            if pos >= end {
                return Err(LogError::Io("batch extends past the written end of its segment".into()));
            }
            let want = ((total - buf.len()) as u64).max(64 * 1024).min(end - pos);
            read_range(file, pos, pos + want, &mut buf).await?;
            pos += want;
            continue;
        }
        let b = buf.split_to(total);
        if h.last_offset() < offset {
            continue;
        }
        batch::check_stored_batch(&b).map_err(|e| io_err("corrupt batch on disk", e))?;
        if !out.is_empty() && out.len() + total > max_bytes {
            break;
        }
        out.extend_from_slice(&b);
        if out.len() >= max_bytes {
            break;
        }
    }
    Ok(out.freeze())
}

/// Inside one batch, the offset and timestamp of the first record with a
/// timestamp >= `timestamp`. Compressed batches are not opened: their base offset
/// and max timestamp stand for them.
fn first_record_at_or_after(batch_bytes: &[u8], h: &BatchHeader, timestamp: i64) -> (i64, i64) {
    if h.compression() != 0 || h.is_log_append_time() {
        return (h.base_offset, h.max_timestamp);
    }
    let mut found = None;
    let _ = for_each_record_timestamp(batch_bytes, h, |offset_delta, ts| {
        if found.is_none() && ts >= timestamp {
            found = Some((h.base_offset + offset_delta as i64, ts));
        }
    });
    found.unwrap_or((h.base_offset, h.max_timestamp))
}

/// Loads one segment. Returns it and whether it was found shorter than its file (torn).
async fn load_segment(
    dir: &Path,
    base: i64,
    next_base: Option<i64>,
    is_last: bool,
    clean: bool,
    cfg: &LogConfig,
) -> Result<(Segment, bool), LogError> {
    let path = segment_file(dir, base, "log");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .map_err(|e| io_err(&format!("opening {}", path.display()), e))?;
    let file_size = file.file_size().await.map_err(|e| io_err("stat segment", e))?;
    let mut seg = Segment::new(base);
    seg.closed = !is_last;
    if let Ok(meta) = std::fs::metadata(&path) {
        if let Ok(m) = meta.modified() {
            if let Ok(d) = m.duration_since(std::time::UNIX_EPOCH) {
                seg.created_ms = d.as_millis() as i64;
            }
        }
    }
    let trusted = if is_last { clean } else { true };
    let index = std::fs::read(segment_file(dir, base, "index")).ok().and_then(|b| OffsetIndex::decode(&b, file_size.max(1)));
    let time_index = std::fs::read(segment_file(dir, base, "timeindex")).ok().and_then(|b| TimeIndex::decode(&b));
    let mut short = false;
    match (trusted, index, time_index) {
        (true, Some(index), Some(time_index)) if !is_last => {
            seg.index = index;
            seg.time_index = time_index;
            seg.size = file_size;
            seg.next_offset = next_base.unwrap_or(base);
            if let Some((ts, rel)) = seg.time_index_last() {
                seg.max_timestamp = ts;
                seg.offset_of_max_timestamp = base + rel as i64;
            }
            seg.finalized = true;
        }
        (trusted, index, time_index) => {
            // Scan: from the last index entry when the files are trusted, else from the start.
            let (start_pos, start_index, start_time_index) = match (trusted, index, time_index) {
                (true, Some(i), Some(t)) => (i.last_position() as u64, i, t),
                _ => (0, OffsetIndex::default(), TimeIndex::default()),
            };
            seg.index = start_index;
            seg.time_index = start_time_index;
            let scanned = scan_segment(&file, base, start_pos, file_size, &mut seg, cfg).await?;
            if scanned < file_size {
                if !trusted || scanned + DMA_ALIGNMENT_BYTES <= file_size || !is_last {
                    tracing::warn!(
                        segment = %path.display(),
                        valid_bytes = scanned,
                        file_bytes = file_size,
                        "truncating torn or corrupt segment tail"
                    );
                }
                file.truncate(scanned).await.map_err(|e| io_err("truncating segment", e))?;
                file.fdatasync().await.map_err(|e| io_err("fdatasync", e))?;
                short = true;
            }
            seg.finalized = !is_last;
            if !is_last {
                let mut ti = seg.time_index.clone();
                if seg.max_timestamp >= 0 {
                    ti.append(seg.max_timestamp, (seg.offset_of_max_timestamp - base) as u32);
                }
                write_small_file(segment_file(dir, base, "index"), seg.index.encode()).await?;
                write_small_file(segment_file(dir, base, "timeindex"), ti.encode()).await?;
            }
        }
    }
    if is_last {
        seg.written = seg.size;
        let tail_len = seg.size % DMA_ALIGNMENT_BYTES;
        if tail_len > 0 {
            let mut tail = BytesMut::new();
            read_range(&file, seg.size - tail_len, seg.size, &mut tail).await?;
            seg.tail_block = tail.to_vec();
        }
        seg.allocated = file_size;
        seg.file = Some(Rc::new(file));
    } else {
        seg.written = seg.size;
        seg.file = Some(Rc::new(file));
    }
    Ok((seg, short))
}

impl Segment {
    fn time_index_last(&self) -> Option<(i64, u32)> {
        let bytes = self.time_index.encode();
        let last = bytes.len().checked_sub(12)?;
        let e = bytes.get(last..)?;
        Some((i64::from_be_bytes(e[..8].try_into().ok()?), u32::from_be_bytes(e[8..].try_into().ok()?)))
    }
}

/// Scans batches from `start_pos`, checking length, CRC and offset continuity,
/// accounting each into `seg`. Returns the position of the first byte not part of a valid batch.
async fn scan_segment(
    file: &DmaFile,
    base: i64,
    start_pos: u64,
    file_size: u64,
    seg: &mut Segment,
    cfg: &LogConfig,
) -> Result<u64, LogError> {
    seg.size = start_pos;
    seg.next_offset = base;
    let mut pos = start_pos;
    let mut buf = BytesMut::new();
    let mut buf_pos = start_pos;
    let mut expected_base: Option<i64> = if start_pos == 0 { Some(base) } else { None };
    loop {
        // Refill so that at least one whole batch (or the rest of the file) is buffered.
        let need = match BatchHeader::parse(&buf) {
            Ok(h) if h.batch_length >= 49 => h.total_bytes(),
            Ok(_) => return Ok(pos),
            Err(_) => BATCH_HEADER_BYTES,
        };
        if buf.len() < need {
            let have_end = buf_pos + buf.len() as u64;
            if have_end >= file_size {
                return Ok(pos);
            }
            let want = ((need - buf.len()) as u64).max(DMA_READ_BYTES_MAX as u64).min(file_size - have_end);
            read_range(file, have_end, have_end + want, &mut buf).await?;
            continue;
        }
        let Ok(h) = batch::check_stored_batch(&buf[..need]) else { return Ok(pos) };
        if let Some(e) = expected_base {
            if h.base_offset != e {
                return Ok(pos);
            }
        }
        if h.base_offset < base || h.last_offset() < h.base_offset {
            return Ok(pos);
        }
        seg.account(&h, need as u64, cfg.index_interval_bytes);
        expected_base = Some(h.last_offset() + 1);
        pos += need as u64;
        let _ = buf.split_to(need);
        buf_pos = pos;
    }
}

/// Calls `f(offset_delta, timestamp)` for each record of an uncompressed batch.
/// Stops quietly at the first malformed record (stored batches were validated on append).
fn for_each_record_timestamp(batch_bytes: &[u8], h: &BatchHeader, mut f: impl FnMut(i32, i64)) -> Option<()> {
    let mut at = BATCH_HEADER_BYTES;
    for _ in 0..h.records_count.max(0) {
        let (len, n) = batch::read_varint(batch_bytes.get(at..)?)?;
        let body_start = at + n;
        let body = batch_bytes.get(body_start..body_start + usize::try_from(len).ok()?)?;
        let (ts_delta, n1) = batch::read_varlong(body.get(1..)?)?;
        let (off_delta, _) = batch::read_varint(body.get(1 + n1..)?)?;
        f(off_delta, h.base_timestamp.wrapping_add(ts_delta));
        at = body_start + body.len();
    }
    Some(())
}
