//! # corestream
//!
//! A broker that speaks the Apache Kafka wire protocol, built thread-per-core
//! on io_uring (glommio). Read this page first: it names each module and what
//! it owns.
//!
//! ## Shape of the running broker
//!
//! `corestream serve` starts one glommio executor per selected CPU, pinned to
//! it. Each executor runs a **shard** ([`shard::Shard`]) that owns:
//! - its own io_uring reactor, its own listener on the broker address
//!   (SO_REUSEPORT: the kernel spreads connections across cores) and the
//!   connections it accepted ([`net`]);
//! - the partitions assigned to it by the **shard table** inside the metadata
//!   image ([`shard::table`]), each a [`storage::log::PartitionLog`] whose
//!   segment files it writes with DMA (O_DIRECT, aligned buffers);
//! - a read-only copy of the metadata image, replaced whole when topics change.
//!
//! Nothing is shared between cores but bounded glommio channels (the mesh). A
//! request is decoded on the core that holds the connection
//! ([`handlers`]); the parts naming partitions owned by other cores travel as
//! [`shard::Op`]s to their owners and come back as [`shard::Reply`]s. No locks
//! or shared mutable state on the produce/fetch path.
//!
//! Changes to the metadata image (creating or deleting topics, adding
//! partitions, altering configs) run on shard 0, the controller shard: it
//! persists the new image (`<data-dir>/metadata.json`) and applies it on every
//! shard before the admin request is answered, so every connection sees the
//! same topics. A future replicated controller will feed the same image.
//!
//! ## Request flow
//!
//! A connection has a reader task and a writer task. The reader takes frames
//! off the socket ([`protocol::frame`]), starts each request's handler and
//! queues its response future; the writer awaits those futures in order. So
//! requests run concurrently while responses keep request order, and the bytes
//! of unanswered requests are bounded per connection and per core
//! (backpressure: past the bound the reader stops reading). A produce request
//! validates its batches ([`protocol::batch`]) on the connection's core and
//! dispatches them to their owners *before* the next request is read, so a
//! producer's pipelined batches land in order. Batches for partitions the
//! connection's own core owns are appended right in the handler
//! ([`shard::Shard::produce_append`]); only the others cross the mesh.
//!
//! ## Coordinators
//!
//! Consumer groups and transactions keep their state in internal topics written
//! through the same log engine ([`shard::internal`]): `__consumer_offsets`
//! (group metadata, committed offsets) and `__transaction_state` (transactional
//! ids). A group id or transactional id hashes to a partition of its topic, so
//! its coordinator runs on the core owning that partition ([`group::coordinator`],
//! [`txn::coordinator`]); other cores forward requests to it over the mesh, as
//! they do produce and fetch. Each coordinator's logic is a state machine with no
//! I/O ([`group::state`], [`group::consumer`] for KIP-848, [`txn::state`]), driven
//! by a thin glommio layer that persists, ticks the clock and loads its partitions
//! at start. Ending a transaction writes commit/abort markers on every partition's
//! owner; each partition's idempotent and transactional producer state (sequence
//! numbers, open and aborted transactions, the last stable offset) lives with its
//! log ([`storage::producers`]).
//!
//! ## Storage
//!
//! One directory per partition (`<topic>-<partition>`) of Kafka-format segment
//! files with sparse offset and time indexes ([`storage::index`]). Appends get
//! their offset synchronously and are written by a per-partition flusher.
//! Consumers see a batch once its O_DIRECT write has completed (the high
//! watermark is the end of what is written, so a SIGKILL never takes back what a
//! consumer read); acks=0 waits only for room in the write queue, acks=1 for the
//! write, acks=all for a sync round of the core's [`storage::syncer`] (one
//! device cache flush, or one `syncfs` when metadata is pending, covering every
//! partition of the core: group commit). Recently written
//! batches stay in memory for tailing consumers; older ones are read with DMA
//! reads, each batch checked (CRC, offsets) before it is served. After a crash,
//! recovery validates index files, checks every batch's length, CRC and offset
//! continuity from the last trusted point and truncates a torn tail (keeping a
//! copy when it is not just zeros). A full disk stalls a partition's writes until
//! space returns; any other write error takes only that partition offline. See
//! [`storage::log`].
//!
//! ## Modules
//! - [`config`]: broker and topic settings under Kafka's names.
//! - [`limits`]: every bound, with compile-time checks of their relations.
//! - [`protocol`]: framing, guarded request decoding, record batch validation, bounded decompression, Kafka error codes. No I/O.
//! - [`group`]: consumer groups: the per-core group coordinator, its state machine, committed offsets in `__consumer_offsets`.
//! - [`txn`]: the transaction coordinator (transactional ids in `__transaction_state`, markers).
//! - [`handlers`]: one file per API family; [`handlers::api_versions`] lists what is served.
//! - [`metrics`]: per-core counters and histograms, the Prometheus admin endpoint.
//! - [`net`]: listener, connections, ordered responses, backpressure.
//! - [`shard`]: per-core state, the cross-core mesh, admin changes, the shard table.
//! - [`storage`]: partition logs, segments, indexes, recovery, retention.
//! - [`cli`]: `serve` and the client commands (`topic`, `produce`, `consume`) built on librdkafka.
//! - [`util`]: a millisecond clock and a core-local notification primitive.
//! - [`bench`]: `corestream bench`, a librdkafka load generator and the side-by-side comparison with peers.

pub mod bench;
pub mod cli;
pub mod config;
pub mod group;
pub mod handlers;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod shard;
pub mod storage;
pub mod txn;
pub mod util;
