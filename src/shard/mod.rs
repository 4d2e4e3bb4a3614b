//! Shards: one per core, each owning its partitions, its connections and its
//! copy of the metadata image.
//!
//! A request is decoded on the core holding the connection. The parts that
//! name partitions owned by other cores become [`Op`]s sent over bounded
//! glommio cross-core channels (the mesh); the owner runs them and sends a
//! [`Reply`] back the same way, matched by request id. Nothing is shared
//! between cores but these channels. Admin operations that change the
//! metadata image run on shard 0 (the controller shard), which persists the new
//! image and applies it on every shard before answering.

pub mod internal;
pub mod table;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::sync::Semaphore;

use crate::config::{BrokerConfig, TopicOverrides};
use crate::protocol::errors as ec;
use crate::storage::log::{AppendInfo, LogError, PartitionLog};
use crate::util::now_ms;
use table::{MetadataImage, PartitionMeta, ShardId, TopicMeta};

/// What one shard asks another to do.
#[derive(Debug)]
pub enum Op {
    Produce { parts: Vec<ProducePart>, acks: i16 },
    Fetch { parts: Vec<FetchPart> },
    /// Answer when any of these partitions has data at or past the offset (below the last
    /// stable offset when `committed`), or after `wait_ms`.
    Watch { parts: Vec<(std::sync::Arc<str>, i32, i64)>, wait_ms: i64, committed: bool },
    ListOffsets { topic: String, partition: i32, timestamp: i64, committed: bool },
    DeleteRecords { topic: String, partition: i32, offset: i64 },
    LogDirs,
    Metrics,
    Apply { image: MetadataImage },
    Admin(AdminOp),
    Group(crate::group::GroupOp),
    /// Shard 0 hands out a block of never-used producer ids.
    AllocProducerIds,
    Txn(crate::txn::TxnOp),
    /// Append commit/abort markers of one producer's transaction to these partitions.
    WriteMarkers { producer_id: i64, epoch: i16, commit: bool, parts: Vec<(String, i32)> },
    DescribeProducers { topic: String, partition: i32 },
}

#[derive(Debug)]
pub enum Reply {
    Produce(Vec<Result<AppendInfo, i16>>),
    Fetch(Vec<FetchPartResult>),
    Watched,
    ListOffsets(Result<(i64, i64), i16>),
    DeleteRecords(Result<i64, i16>),
    LogDirs(Vec<(String, i32, u64)>),
    Metrics(Vec<crate::metrics::Sample>),
    Applied,
    Admin(Vec<AdminResult>),
    Group(crate::group::GroupReply),
    ProducerIds(Result<(i64, i64), i16>),
    Txn(crate::txn::TxnReply),
    Markers(Vec<i16>),
    Producers(Result<Vec<ProducerSummary>, i16>),
}

/// One producer on a partition: id, epoch, last sequence, last write ms, open transaction's first offset (-1: none).
pub type ProducerSummary = (i64, i16, i32, i64, i64);

/// A part appended by [`Shard::produce_append`]: its log and where the batches
/// went, or the error code to answer with.
pub type Appended = Result<(Rc<PartitionLog>, AppendInfo), i16>;

#[derive(Debug)]
pub struct ProducePart {
    pub topic: String,
    pub partition: i32,
    pub batches: Vec<BytesMut>,
}

#[derive(Debug, Clone)]
pub struct FetchPart {
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    /// read_committed: stop at the last stable offset and report aborted transactions.
    pub committed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FetchPartResult {
    pub error: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
    /// read_committed: aborted transactions in the returned range (producer id, first offset).
    pub aborted: Vec<(i64, i64)>,
}

/// Changes to the metadata image, run on shard 0.
#[derive(Debug)]
pub enum AdminOp {
    CreateTopics { topics: Vec<NewTopic>, validate_only: bool },
    DeleteTopics { names: Vec<String> },
    CreatePartitions { topics: Vec<(String, i32)>, validate_only: bool },
    AlterConfigs { topic: String, ops: Vec<ConfigChange>, replace: bool, validate_only: bool },
}

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's `num.partitions`.
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

#[derive(Debug, Clone)]
pub struct AdminResult {
    pub name: String,
    pub error: i16,
    pub message: Option<String>,
    pub topic_id: [u8; 16],
    pub partitions: i32,
}

/// What travels over the mesh: requests and the replies matched to them by id.
pub enum Msg {
    Request { id: u64, from: ShardId, op: Op },
    Response { id: u64, reply: Reply },
}

/// One core's broker state.
pub struct Shard {
    pub id: ShardId,
    pub nr_shards: usize,
    pub config: BrokerConfig,
    image: RefCell<Rc<MetadataImage>>,
    logs: RefCell<HashMap<String, Vec<Option<Rc<PartitionLog>>>>>,
    senders: Option<Senders<Msg>>,
    waiting: RefCell<HashMap<u64, LocalSender<Reply>>>,
    next_id: Cell<u64>,
    admin_gate: Semaphore,
    /// Bytes of requests in flight on this core's connections.
    pub inflight_bytes: Rc<Semaphore>,
    pub inflight_requests: Cell<usize>,
    pub shutting_down: Cell<bool>,
    /// Fires once, when shutdown begins.
    pub shutdown: crate::util::LocalNotify,
    pub fetch_sessions: RefCell<crate::handlers::fetch_session::FetchSessions>,
    pub metrics: crate::metrics::CoreMetrics,
    /// One sync round covers every partition of this core (group commit).
    pub syncer: Rc<crate::storage::syncer::CoreSyncer>,
    /// The consumer groups this core coordinates.
    pub groups: crate::group::coordinator::Coordinator,
    /// The transactional ids this core coordinates.
    pub txns: crate::txn::coordinator::TxnCoordinator,
    /// This shard's unused producer ids: [next, end).
    producer_ids: Cell<(i64, i64)>,
    producer_id_gate: Semaphore,
    meta_path: PathBuf,
}

pub type MeshBuilderFull = MeshBuilder<Msg, Full>;

impl Shard {
    /// Joins the mesh and opens this shard's partitions.
    pub async fn start(
        id: ShardId,
        nr_shards: usize,
        config: BrokerConfig,
        image: MetadataImage,
        mesh: Option<MeshBuilderFull>,
    ) -> anyhow::Result<Rc<Shard>> {
        let (senders, receivers) = match mesh {
            Some(m) => {
                let (s, r) = m.join().await.map_err(|_| anyhow::anyhow!("joining the cross-core mesh failed"))?;
                (Some(s), Some(r))
            }
            None => (None, None),
        };
        let meta_path = config.data_dir.join("metadata.json");
        let shard = Rc::new(Shard {
            id,
            nr_shards,
            config,
            image: RefCell::new(Rc::new(image.clone())),
            logs: RefCell::new(HashMap::new()),
            senders,
            waiting: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            admin_gate: Semaphore::new(1),
            inflight_bytes: Rc::new(Semaphore::new(crate::limits::CORE_INFLIGHT_BYTES_MAX as u64)),
            inflight_requests: Cell::new(0),
            shutting_down: Cell::new(false),
            shutdown: Default::default(),
            fetch_sessions: RefCell::new(Default::default()),
            metrics: Default::default(),
            syncer: Default::default(),
            groups: Default::default(),
            txns: Default::default(),
            producer_ids: Cell::new((0, 0)),
            producer_id_gate: Semaphore::new(1),
            meta_path,
        });
        shard.apply_image(image).await;
        if let Some(mut receivers) = receivers {
            for (_, rx) in receivers.streams() {
                let me = shard.clone();
                glommio::spawn_local(async move {
                    while let Some(msg) = rx.recv().await {
                        me.on_message(msg);
                    }
                })
                .detach();
            }
        }
        Ok(shard)
    }

    pub fn image(&self) -> Rc<MetadataImage> {
        self.image.borrow().clone()
    }

    pub fn log(&self, topic: &str, partition: i32) -> Option<Rc<PartitionLog>> {
        let logs = self.logs.borrow();
        let p = usize::try_from(partition).ok()?;
        logs.get(topic)?.get(p)?.clone()
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
    }

    fn on_message(self: &Rc<Self>, msg: Msg) {
        match msg {
            Msg::Request { id, from, op } => {
                crate::metrics::add(&self.metrics.mesh_received, 1);
                let me = self.clone();
                glommio::spawn_local(async move {
                    let reply = me.execute(op).await;
                    if let Some(s) = &me.senders {
                        // The peer's receiver loop never blocks, so this send always makes progress.
                        let _ = s.send_to(from, Msg::Response { id, reply }).await;
                    }
                })
                .detach();
            }
            Msg::Response { id, reply } => {
                if let Some(tx) = self.waiting.borrow_mut().remove(&id) {
                    let _ = tx.try_send(reply);
                }
            }
        }
    }

    /// Runs `op` on shard `target`: here directly, elsewhere through the mesh.
    pub async fn call(self: &Rc<Self>, target: ShardId, op: Op) -> Reply {
        if target == self.id {
            // Boxed: an op may call other shards (this one included), e.g. EndTxn writing markers.
            return Box::pin(self.execute(op)).await;
        }
        let Some(senders) = &self.senders else {
            panic!("call to shard {target} from shard {} without a mesh", self.id);
        };
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        crate::metrics::add(&self.metrics.mesh_sent, 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.waiting.borrow_mut().insert(id, tx);
        if senders.send_to(target, Msg::Request { id, from: self.id, op }).await.is_err() {
            self.waiting.borrow_mut().remove(&id);
            return Reply::Admin(Vec::new());
        }
        match rx.recv().await {
            Some(r) => r,
            None => Reply::Admin(Vec::new()),
        }
    }

    /// Runs an op against this shard's own partitions.
    pub async fn execute(self: &Rc<Self>, op: Op) -> Reply {
        match op {
            Op::Produce { parts, acks } => Reply::Produce(self.produce_local(parts, acks).await),
            Op::Fetch { parts } => {
                let mut out = Vec::with_capacity(parts.len());
                for p in parts {
                    out.push(self.fetch_local(&p).await);
                }
                Reply::Fetch(out)
            }
            Op::Watch { parts, wait_ms, committed } => {
                self.watch_local(&parts, wait_ms, committed).await;
                Reply::Watched
            }
            Op::ListOffsets { topic, partition, timestamp, committed } => {
                Reply::ListOffsets(self.list_offsets_local(&topic, partition, timestamp, committed).await)
            }
            Op::DeleteRecords { topic, partition, offset } => {
                let r = match self.log(&topic, partition) {
                    None => Err(ec::UNKNOWN_TOPIC_OR_PARTITION),
                    Some(log) => {
                        let offset = if offset == -1 { log.high_watermark() } else { offset };
                        log.delete_records_before(offset).await.map_err(|e| log_error_code(&e))
                    }
                };
                Reply::DeleteRecords(r)
            }
            Op::LogDirs => {
                let logs = self.logs.borrow();
                let mut out = Vec::new();
                for (t, parts) in logs.iter() {
                    for (i, l) in parts.iter().enumerate() {
                        if let Some(l) = l {
                            out.push((t.clone(), i as i32, l.size_bytes()));
                        }
                    }
                }
                Reply::LogDirs(out)
            }
            Op::Metrics => Reply::Metrics(self.local_samples()),
            Op::Apply { image } => {
                self.apply_image(image).await;
                Reply::Applied
            }
            Op::Admin(op) => Reply::Admin(self.admin_local(op).await),
            Op::Group(op) => Reply::Group(crate::group::coordinator::Coordinator::execute(self, op).await),
            Op::AllocProducerIds => Reply::ProducerIds(self.alloc_producer_ids_local().await),
            Op::DescribeProducers { topic, partition } => {
                Reply::Producers(self.log(&topic, partition).map(|l| l.producers_summary()).ok_or(ec::NOT_LEADER_OR_FOLLOWER))
            }
            Op::Txn(op) => Reply::Txn(crate::txn::coordinator::TxnCoordinator::execute(self, op).await),
            Op::WriteMarkers { producer_id, epoch, commit, parts } => {
                Reply::Markers(crate::txn::coordinator::write_markers_local(self, producer_id, epoch, commit, parts).await)
            }
        }
    }

    /// Appends the batches of each part in call order (no await between them),
    /// then waits for durability as `acks` asks.
    pub async fn produce_local(self: &Rc<Self>, parts: Vec<ProducePart>, acks: i16) -> Vec<Result<AppendInfo, i16>> {
        let started = self.produce_append(parts);
        Self::produce_wait(started, acks).await
    }

    /// The first half of [`Self::produce_local`]: appends every part's batches now,
    /// in order, without awaiting. The produce handler calls it directly for parts
    /// this core owns (no task, no boxed op), then awaits [`Self::produce_wait`].
    pub fn produce_append(&self, parts: Vec<ProducePart>) -> Vec<Appended> {
        let epoch_of = |t: &str, p: i32| -> i32 {
            let img = self.image.borrow();
            img.topics.get(t).and_then(|tm| tm.partitions.get(p as usize)).map(|pm| pm.leader_epoch).unwrap_or(0)
        };
        let mut started = Vec::with_capacity(parts.len());
        for part in parts {
            let Some(log) = self.log(&part.topic, part.partition) else {
                started.push(Err(ec::NOT_LEADER_OR_FOLLOWER));
                continue;
            };
            let epoch = epoch_of(&part.topic, part.partition);
            let mut first: Option<AppendInfo> = None;
            let mut last: Option<AppendInfo> = None;
            let mut err = None;
            for mut b in part.batches {
                match log.append_now(&mut b, epoch) {
                    Ok(info) => {
                        first.get_or_insert(info);
                        last = Some(info);
                    }
                    Err(e) => {
                        err = Some(log_error_code(&e));
                        break;
                    }
                }
            }
            match (err, first, last) {
                (Some(e), _, _) => started.push(Err(e)),
                (None, Some(f), Some(l)) => started.push(Ok((log, AppendInfo { last_offset: l.last_offset, ..f }))),
                _ => started.push(Err(ec::CORRUPT_MESSAGE)),
            }
        }
        started
    }

    /// The second half of [`Self::produce_local`]: waits until each appended part is
    /// as durable as `acks` asks.
    pub async fn produce_wait(started: Vec<Appended>, acks: i16) -> Vec<Result<AppendInfo, i16>> {
        let mut out = Vec::with_capacity(started.len());
        for s in started {
            out.push(match s {
                Err(e) => Err(e),
                Ok((log, info)) => {
                    let waited = match acks {
                        -1 => log.wait_durable(info.last_offset + 1).await,
                        1 => log.wait_written(info.last_offset + 1).await,
                        // acks=0 waits for nothing but room: on a slow disk the request stays
                        // in flight, so the connection's budgets stop reading its socket.
                        _ => log.wait_for_room().await,
                    };
                    waited.map(|_| info).map_err(|e| log_error_code(&e))
                }
            });
        }
        out
    }

    pub async fn fetch_local(&self, p: &FetchPart) -> FetchPartResult {
        let Some(log) = self.log(&p.topic, p.partition) else {
            return FetchPartResult { error: ec::NOT_LEADER_OR_FOLLOWER, high_watermark: -1, log_start_offset: -1, ..Default::default() };
        };
        let lso = log.last_stable_offset();
        match log.read(p.offset, p.max_bytes).await {
            Ok(mut r) => {
                let mut aborted = Vec::new();
                if p.committed {
                    // Only whole batches below the last stable offset.
                    let (spans, _) = crate::protocol::batch::scan_batches(&r.records);
                    let keep = spans.iter().take_while(|s| s.header.base_offset < lso).last().map_or(0, |s| s.end);
                    let upper = spans.iter().take_while(|s| s.header.base_offset < lso).last().map_or(p.offset, |s| s.header.next_offset());
                    r.records.truncate(keep);
                    if !r.records.is_empty() {
                        aborted = log.aborted_between(p.offset, upper);
                    }
                }
                FetchPartResult {
                    error: ec::NONE,
                    high_watermark: r.high_watermark,
                    last_stable_offset: lso.min(r.high_watermark),
                    log_start_offset: r.log_start_offset,
                    records: r.records,
                    aborted,
                }
            }
            Err(e) => FetchPartResult {
                error: log_error_code(&e),
                high_watermark: log.high_watermark(),
                last_stable_offset: lso,
                log_start_offset: log.log_start_offset(),
                records: Bytes::new(),
                aborted: Vec::new(),
            },
        }
    }

    pub async fn watch_local(&self, parts: &[(std::sync::Arc<str>, i32, i64)], wait_ms: i64, committed: bool) {
        let logs: Vec<(Rc<PartitionLog>, i64)> =
            parts.iter().filter_map(|(t, p, o)| self.log(t, *p).map(|l| (l, *o))).collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms.max(0) as u64);
        loop {
            let listeners: Vec<_> = logs.iter().map(|(l, _)| Box::pin(l.data_arrived.listen())).collect();
            let visible = |l: &PartitionLog| if committed { l.last_stable_offset() } else { l.high_watermark() };
            if logs.iter().any(|(l, o)| visible(l) > *o) || self.shutting_down.get() {
                return;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            let mut all = listeners;
            let first = futures_lite::future::poll_fn(move |cx| {
                for l in all.iter_mut() {
                    if std::future::Future::poll(l.as_mut(), cx).is_ready() {
                        return std::task::Poll::Ready(());
                    }
                }
                std::task::Poll::Pending
            });
            futures_lite::future::or(first, glommio::timer::sleep(deadline - now)).await;
        }
    }

    async fn list_offsets_local(&self, topic: &str, partition: i32, timestamp: i64, committed: bool) -> Result<(i64, i64), i16> {
        let Some(log) = self.log(topic, partition) else {
            return Err(ec::NOT_LEADER_OR_FOLLOWER);
        };
        match timestamp {
            -2 => Ok((-1, log.log_start_offset())),
            -1 if committed => Ok((-1, log.last_stable_offset())),
            -1 => Ok((-1, log.high_watermark())),
            -3 => {
                let (ts, off) = log.max_timestamp();
                if ts < 0 {
                    Ok((-1, -1))
                } else {
                    Ok((ts, off))
                }
            }
            -4 | -5 => Ok((-1, log.log_start_offset())),
            t if t < 0 => Err(ec::INVALID_REQUEST),
            t => match log.offset_for_timestamp(t).await {
                Ok(Some((off, ts))) => Ok((ts, off)),
                Ok(None) => Ok((-1, -1)),
                Err(e) => Err(log_error_code(&e)),
            },
        }
    }

    /// Makes `image` this shard's image: opens partitions it now owns, deletes
    /// those of removed topics, and pushes config changes to open logs.
    pub async fn apply_image(self: &Rc<Self>, image: MetadataImage) {
        let old = self.image();
        let image = Rc::new(image);
        // Deleted topics (or recreated under the same name with a new id).
        let doomed: Vec<(String, Vec<Option<Rc<PartitionLog>>>)> = {
            let mut logs = self.logs.borrow_mut();
            let names: Vec<String> = logs
                .keys()
                .filter(|t| match (old.topics.get(*t), image.topics.get(*t)) {
                    (_, None) => true,
                    (Some(o), Some(n)) => o.id != n.id,
                    (None, Some(_)) => false,
                })
                .cloned()
                .collect();
            names.into_iter().filter_map(|n| logs.remove(&n).map(|v| (n, v))).collect()
        };
        *self.image.borrow_mut() = image.clone();
        for (_, parts) in doomed {
            for log in parts.into_iter().flatten() {
                log.delete().await;
            }
        }
        for (name, t) in image.topics.iter() {
            let cfg = self.config.log_config(&t.configs);
            for (i, pm) in t.partitions.iter().enumerate() {
                if pm.owner != self.id {
                    continue;
                }
                let existing = self.log(name, i as i32);
                match existing {
                    Some(log) => log.set_config(cfg.clone()),
                    None => {
                        let dir = self.partition_dir(name, i as i32);
                        match PartitionLog::open(dir.clone(), cfg.clone()).await {
                            Ok(log) => {
                                log.set_syncer(self.syncer.clone());
                                let mut logs = self.logs.borrow_mut();
                                let v = logs.entry(name.clone()).or_default();
                                if v.len() <= i {
                                    v.resize(i + 1, None);
                                }
                                v[i] = Some(log);
                            }
                            Err(e) => tracing::error!(dir = %dir.display(), error = %e, "cannot open partition"),
                        }
                    }
                }
            }
        }
        crate::group::coordinator::Coordinator::on_image(self);
        crate::txn::coordinator::TxnCoordinator::on_image(self);
    }

    /// Sends `image` to every shard (this one included) and waits until all applied it.
    async fn broadcast_image(self: &Rc<Self>, image: &MetadataImage) {
        let calls = (0..self.nr_shards).map(|s| {
            let me = self.clone();
            let img = image.clone();
            glommio::spawn_local(async move { me.call(s, Op::Apply { image: img }).await })
        });
        let tasks: Vec<_> = calls.collect();
        for t in tasks {
            t.await;
        }
    }

    /// A producer id never handed out before (by this broker, across restarts).
    pub async fn next_producer_id(self: &Rc<Self>) -> Result<i64, i16> {
        let (next, end) = self.producer_ids.get();
        if next < end {
            self.producer_ids.set((next + 1, end));
            return Ok(next);
        }
        match self.call(0, Op::AllocProducerIds).await {
            Reply::ProducerIds(Ok((start, end))) => {
                self.producer_ids.set((start + 1, end));
                Ok(start)
            }
            Reply::ProducerIds(Err(e)) => Err(e),
            _ => Err(ec::COORDINATOR_NOT_AVAILABLE),
        }
    }

    /// On shard 0: reserves the next block of producer ids, durably, before handing it out.
    async fn alloc_producer_ids_local(&self) -> Result<(i64, i64), i16> {
        const BLOCK: i64 = 1000;
        let _permit = self.producer_id_gate.acquire_permit(1).await.map_err(|_| ec::COORDINATOR_NOT_AVAILABLE)?;
        let path = self.config.data_dir.join("producer-ids");
        let r = glommio::executor()
            .spawn_blocking(move || -> std::io::Result<(i64, i64)> {
                use std::io::Write;
                let start = match std::fs::read_to_string(&path) {
                    Ok(s) => s.trim().parse::<i64>().map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(e),
                };
                let end = start + BLOCK;
                let tmp = path.with_extension("tmp");
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(format!("{end}\n").as_bytes())?;
                f.sync_data()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(path.parent().unwrap_or(std::path::Path::new(".")))?.sync_all()?;
                Ok((start, end))
            })
            .await;
        r.map_err(|e| {
            tracing::error!(error = %e, "cannot reserve producer ids");
            ec::KAFKA_STORAGE_ERROR
        })
    }

    /// Runs an admin op on shard 0, serialised with every other admin op.
    pub async fn admin(self: &Rc<Self>, op: AdminOp) -> Vec<AdminResult> {
        match self.call(0, Op::Admin(op)).await {
            Reply::Admin(r) => r,
            _ => Vec::new(),
        }
    }

    async fn admin_local(self: &Rc<Self>, op: AdminOp) -> Vec<AdminResult> {
        assert_eq!(self.id, 0, "admin ops run on the controller shard");
        let _permit = self.admin_gate.acquire_permit(1).await;
        let mut image = (*self.image()).clone();
        let (results, changed) = apply_admin(&mut image, op, &self.config, self.nr_shards);
        if changed {
            image.epoch += 1;
            let path = self.meta_path.clone();
            let to_save = image.clone();
            let saved = glommio::executor().spawn_blocking(move || to_save.save(&path)).await;
            if let Err(e) = saved {
                tracing::error!(error = %e, "cannot persist metadata");
                return results
                    .into_iter()
                    .map(|r| AdminResult { error: ec::KAFKA_STORAGE_ERROR, message: Some(e.to_string()), ..r })
                    .collect();
            }
            self.broadcast_image(&image).await;
        }
        results
    }

    /// Stops accepting connections and long-polls; in-flight requests finish.
    pub fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        self.shutdown.notify_all();
    }

    /// Every shard's metric samples, gathered over the mesh.
    pub async fn gather_metrics(self: &Rc<Self>) -> Vec<crate::metrics::Sample> {
        let mut out = Vec::new();
        for s in 0..self.nr_shards {
            if let Reply::Metrics(v) = self.call(s, Op::Metrics).await {
                out.extend(v);
            }
        }
        if let Some(rss) = crate::metrics::resident_bytes() {
            out.push(crate::metrics::sample("corestream_resident_memory_bytes", crate::metrics::Kind::Gauge, "Resident memory of the broker process.", vec![], rss as f64));
        }
        out
    }

    /// This shard's samples: its core counters, its partitions, its reactor.
    fn local_samples(&self) -> Vec<crate::metrics::Sample> {
        use crate::metrics::{sample, summary, Kind};
        let mut out = self.metrics.samples(self.id);
        let shard = || ("shard", self.id.to_string());
        let stats = glommio::executor().executor_stats();
        out.push(sample("corestream_reactor_busy_seconds_total", Kind::Counter, "Time the core's reactor spent running tasks.", vec![shard()], stats.executor_runtime().as_secs_f64()));
        out.push(sample("corestream_reactor_seconds_total", Kind::Counter, "Time since the core's reactor started.", vec![shard()], stats.total_runtime().as_secs_f64()));
        out.push(sample("corestream_inflight_requests", Kind::Gauge, "Requests read and not yet answered on this core.", vec![shard()], self.inflight_requests.get() as f64));
        let mut fsync = crate::metrics::new_histogram();
        let mut write = crate::metrics::new_histogram();
        let (mut fsyncs, mut writes, mut memory) = (0u64, 0u64, 0u64);
        for (topic, parts) in self.logs.borrow().iter() {
            for (i, log) in parts.iter().enumerate() {
                let Some(log) = log else { continue };
                let labels = || vec![shard(), ("topic", topic.clone()), ("partition", i.to_string())];
                let st = &log.stats;
                out.push(sample("corestream_partition_produced_bytes_total", Kind::Counter, "Record batch bytes appended, by partition.", labels(), st.appended_bytes.get() as f64));
                out.push(sample("corestream_partition_produced_records_total", Kind::Counter, "Records appended, by partition.", labels(), st.appended_records.get() as f64));
                out.push(sample("corestream_partition_fetched_bytes_total", Kind::Counter, "Record batch bytes read for fetches, by partition.", labels(), st.read_bytes.get() as f64));
                out.push(sample("corestream_partition_log_end_offset", Kind::Gauge, "Log end offset, by partition.", labels(), log.log_end_offset() as f64));
                out.push(sample("corestream_partition_size_bytes", Kind::Gauge, "Bytes of segments on disk, by partition.", labels(), log.size_bytes() as f64));
                fsyncs += st.fsyncs.get();
                if let Ok(sum) = fsync.checked_add(&st.fsync_us.borrow()) {
                    fsync = sum;
                }
                writes += st.writes.get();
                if let Ok(sum) = write.checked_add(&st.write_us.borrow()) {
                    write = sum;
                }
                memory += log.memory_bytes() as u64;
            }
        }
        out.push(sample("corestream_fsyncs_total", Kind::Counter, "Durability waits of partition logs (each served by a sync round or an fdatasync).", vec![shard()], fsyncs as f64));
        out.push(sample("corestream_sync_rounds_total", Kind::Counter, "Group-commit sync rounds, each covering every partition of the core (a device cache flush, or a syncfs when metadata is pending).", vec![shard()], self.syncer.rounds.get() as f64));
        out.push(sample("corestream_sync_full_rounds_total", Kind::Counter, "Group-commit sync rounds that were a syncfs (metadata to commit).", vec![shard()], self.syncer.full_rounds.get() as f64));
        out.push(summary("corestream_sync_round_seconds", "Duration of group-commit sync rounds.", vec![shard()], &self.syncer.round_us.borrow(), 1e-6));
        out.push(summary("corestream_fsync_latency_seconds", "Time partition logs waited for their written bytes to be durable (a sync round or an fdatasync).", vec![shard()], &fsync, 1e-6));
        out.push(sample("corestream_segment_writes_total", Kind::Counter, "O_DIRECT segment writes of partition logs (each carries every batch queued when it started).", vec![shard()], writes as f64));
        out.push(summary("corestream_segment_write_seconds", "Duration of O_DIRECT segment writes (submission to completion; acks=1 waits for one).", vec![shard()], &write, 1e-6));
        out.push(sample("corestream_log_memory_bytes", Kind::Gauge, "Bytes held in memory by partition logs (tail cache and unwritten batches).", vec![shard()], memory as f64));
        out
    }

    /// Applies retention on this shard's partitions.
    pub async fn retention_pass(&self) {
        let logs: Vec<Rc<PartitionLog>> = self.logs.borrow().values().flatten().flatten().cloned().collect();
        let now = now_ms();
        for log in logs {
            if let Err(e) = log.apply_retention(now).await {
                tracing::warn!(dir = %log.dir().display(), error = %e, "retention failed");
            }
            log.expire_producers(now, self.config.producer_id_expiration_ms);
        }
    }

    /// Syncs logs whose `flush.ms` has passed (acks=0/1 data otherwise waits for the next write).
    pub async fn flush_pass(&self) {
        let logs: Vec<Rc<PartitionLog>> = self.logs.borrow().values().flatten().flatten().cloned().collect();
        let now = now_ms();
        for log in logs {
            if let Err(e) = log.sync_if_due(now).await {
                tracing::warn!(dir = %log.dir().display(), error = %e, "periodic flush failed");
            }
        }
    }

    /// Flushes and closes every log on this shard.
    pub async fn close_logs(&self) {
        let logs: Vec<Rc<PartitionLog>> = self.logs.borrow().values().flatten().flatten().cloned().collect();
        for log in logs {
            if let Err(e) = log.close().await {
                tracing::error!(dir = %log.dir().display(), error = %e, "closing partition failed");
            }
        }
    }
}

/// Maps a storage error to the Kafka error code a client gets.
pub fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::OffsetOutOfRange { .. } => ec::OFFSET_OUT_OF_RANGE,
        LogError::Io(_) => ec::KAFKA_STORAGE_ERROR,
        LogError::Closed => ec::NOT_LEADER_OR_FOLLOWER,
        LogError::Producer(code) => *code,
    }
}

/// The pure part of admin ops: changes `image`, says what happened to each item and
/// whether anything changed.
pub fn apply_admin(image: &mut MetadataImage, op: AdminOp, cfg: &BrokerConfig, shards: usize) -> (Vec<AdminResult>, bool) {
    let mut results = Vec::new();
    let mut changed = false;
    let res = |name: &str, error: i16, message: Option<String>| AdminResult {
        name: name.to_string(),
        error,
        message,
        topic_id: [0; 16],
        partitions: -1,
    };
    match op {
        AdminOp::CreateTopics { topics, validate_only } => {
            for t in topics {
                if let Err(m) = table::valid_topic_name(&t.name) {
                    results.push(res(&t.name, ec::INVALID_TOPIC_EXCEPTION, Some(m)));
                    continue;
                }
                if image.topics.contains_key(&t.name) {
                    results.push(res(&t.name, ec::TOPIC_ALREADY_EXISTS, Some(format!("Topic '{}' already exists.", t.name))));
                    continue;
                }
                let partitions = if t.partitions == -1 { cfg.num_partitions } else { t.partitions };
                if partitions <= 0 || partitions > crate::limits::TOPIC_PARTITIONS_MAX {
                    results.push(res(&t.name, ec::INVALID_PARTITIONS, Some(format!("invalid partition count {partitions}"))));
                    continue;
                }
                if t.replication_factor != -1 && t.replication_factor != 1 {
                    results.push(res(
                        &t.name,
                        ec::INVALID_REPLICATION_FACTOR,
                        Some(format!("Replication factor: {} larger than available brokers: 1.", t.replication_factor)),
                    ));
                    continue;
                }
                let mut overrides = TopicOverrides::default();
                let mut bad = None;
                for (k, v) in &t.configs {
                    if let Err(e) = TopicOverrides::validate(k, v) {
                        bad = Some(e.to_string());
                        break;
                    }
                    overrides.0.insert(k.clone(), v.clone());
                }
                if let Some(m) = bad {
                    results.push(res(&t.name, ec::INVALID_CONFIG, Some(m)));
                    continue;
                }
                let owners = image.place(partitions as usize, shards);
                let id = *uuid::Uuid::new_v4().as_bytes();
                let mut r = res(&t.name, ec::NONE, None);
                r.topic_id = id;
                r.partitions = partitions;
                results.push(r);
                if !validate_only {
                    image.topics.insert(
                        t.name.clone(),
                        TopicMeta {
                            name: t.name,
                            id,
                            partitions: owners.into_iter().map(|owner| PartitionMeta { owner, leader_epoch: 0 }).collect(),
                            configs: overrides,
                        },
                    );
                    changed = true;
                }
            }
        }
        AdminOp::DeleteTopics { names } => {
            for n in names {
                if !cfg.delete_topic_enable {
                    results.push(res(&n, ec::TOPIC_DELETION_DISABLED, None));
                } else if n == crate::group::OFFSETS_TOPIC || n == crate::txn::TXN_TOPIC {
                    // Kafka refuses to delete internal topics; the groups live in this one.
                    results.push(res(&n, ec::INVALID_REQUEST, Some("cannot delete the internal topic __consumer_offsets".into())));
                } else if let Some(t) = image.topics.remove(&n) {
                    let mut r = res(&n, ec::NONE, None);
                    r.topic_id = t.id;
                    results.push(r);
                    changed = true;
                } else {
                    results.push(res(&n, ec::UNKNOWN_TOPIC_OR_PARTITION, None));
                }
            }
        }
        AdminOp::CreatePartitions { topics, validate_only } => {
            for (name, count) in topics {
                let Some(current) = image.topics.get(&name).map(|t| t.partitions.len() as i32) else {
                    results.push(res(&name, ec::UNKNOWN_TOPIC_OR_PARTITION, None));
                    continue;
                };
                if name == crate::group::OFFSETS_TOPIC || name == crate::txn::TXN_TOPIC {
                    // Groups are placed by hash modulo the partition count: it must not change.
                    results.push(res(&name, ec::INVALID_REQUEST, Some("the partition count of __consumer_offsets is fixed".into())));
                    continue;
                }
                if count <= current {
                    results.push(res(
                        &name,
                        ec::INVALID_PARTITIONS,
                        Some(format!("Topic currently has {current} partitions, which is higher than the requested {count}.")),
                    ));
                    continue;
                }
                if count > crate::limits::TOPIC_PARTITIONS_MAX {
                    results.push(res(&name, ec::INVALID_PARTITIONS, Some("too many partitions".into())));
                    continue;
                }
                let owners = image.place((count - current) as usize, shards);
                results.push(res(&name, ec::NONE, None));
                if !validate_only {
                    if let Some(t) = image.topics.get_mut(&name) {
                        t.partitions.extend(owners.into_iter().map(|owner| PartitionMeta { owner, leader_epoch: 0 }));
                        changed = true;
                    }
                }
            }
        }
        AdminOp::AlterConfigs { topic, ops, replace, validate_only } => {
            let Some(t) = image.topics.get_mut(&topic) else {
                results.push(res(&topic, ec::UNKNOWN_TOPIC_OR_PARTITION, None));
                return (results, false);
            };
            let mut next = if replace { TopicOverrides::default() } else { t.configs.clone() };
            for op in ops {
                let outcome = match op {
                    ConfigChange::Set(k, v) => TopicOverrides::validate(&k, &v).map(|_| {
                        next.0.insert(k, v);
                    }),
                    ConfigChange::Delete(k) => {
                        if crate::config::topic_key(&k).is_none() {
                            Err(crate::config::ConfigError::UnknownKey(k))
                        } else {
                            next.0.remove(&k);
                            Ok(())
                        }
                    }
                };
                if let Err(e) = outcome {
                    results.push(res(&topic, ec::INVALID_CONFIG, Some(e.to_string())));
                    return (results, false);
                }
            }
            results.push(res(&topic, ec::NONE, None));
            if !validate_only && next != t.configs {
                t.configs = next;
                changed = true;
            }
        }
    }
    (results, changed)
}
