//! Every bound the broker enforces, in one place, with units last in the names.
//!
//! Relations between the limits are checked at compile time below, so that
//! changing one number cannot silently break an assumption made elsewhere.

/// Largest request frame (the 4-byte size prefix excluded) accepted by default
/// (`socket.request.max.bytes`, as in Kafka).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;
/// Largest record batch accepted by default (`message.max.bytes`, as in Kafka).
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 1024 * 1024 + 12;
/// Bytes of requests read from one connection and not yet answered. Past this the
/// connection stops reading its socket until responses drain.
pub const CONNECTION_INFLIGHT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Requests read from one connection and not yet answered.
pub const CONNECTION_INFLIGHT_REQUESTS_MAX: usize = 128;
/// Fetch requests read from one connection and not yet answered. A fetch's response can
/// be [`FETCH_RESPONSE_BYTES_MAX`] whatever its request's size, so without this a client
/// pipelining fetches and never reading the answers would make the broker hold that much
/// per queued request. Clients keep one fetch in flight per connection (Kafka itself
/// reads no request from a connection until the previous one is answered).
pub const CONNECTION_FETCHES_INFLIGHT_MAX: usize = 1;
/// Bytes of requests in flight across all connections of one core.
pub const CORE_INFLIGHT_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Capacity (messages) of each cross-core channel, in each direction.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Longest long-poll wait a Fetch may ask for.
pub const FETCH_WAIT_MS_MAX: i64 = 30_000;
/// Largest response a single Fetch will assemble, whatever the client asks.
pub const FETCH_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest single DMA read issued (glommio 0.9 can hang on reads larger than the
/// device's max sectors, #633/#635; 4 MiB is the smallest max_sectors_kb we have met).
pub const DMA_READ_BYTES_MAX: usize = 1024 * 1024;
/// Alignment of DMA buffers and file positions for O_DIRECT.
pub const DMA_ALIGNMENT_BYTES: u64 = 4096;
/// Bytes of recently appended batches kept in memory per partition, so tailing
/// consumers are served without touching the disk.
pub const TAIL_CACHE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Step by which segment files are preallocated.
pub const PREALLOCATE_STEP_BYTES: u64 = 32 * 1024 * 1024;
/// Step by which small segment writes zero the preallocated blocks ahead of the data
/// (see `storage::log`): one write in every this many bytes carries up to this many zeros.
pub const ZERO_AHEAD_BYTES: u64 = 1024 * 1024;
/// Segment writes at least this large do not zero ahead.
pub const ZERO_AHEAD_WRITE_BYTES_MAX: usize = 64 * 1024;
/// Largest number of partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: i32 = 100_000;
/// Longest topic name (Kafka's limit).
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// Largest single write issued to a segment in one go.
pub const WRITE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most bytes a compressed batch may inflate to when the broker opens one (timestamp
/// lookups); past this the batch is treated as unopenable.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Fetch sessions kept per core.
pub const FETCH_SESSIONS_PER_CORE_MAX: usize = 1000;
/// Most CPUs a broker process will run shards on.
pub const SHARDS_MAX: usize = 256;

const _: () = assert!(MESSAGE_BYTES_MAX_DEFAULT < REQUEST_BYTES_MAX_DEFAULT);
const _: () = assert!(REQUEST_BYTES_MAX_DEFAULT <= CONNECTION_INFLIGHT_BYTES_MAX * 2);
const _: () = assert!(CONNECTION_INFLIGHT_BYTES_MAX <= CORE_INFLIGHT_BYTES_MAX);
const _: () = assert!(CONNECTION_FETCHES_INFLIGHT_MAX >= 1 && CONNECTION_FETCHES_INFLIGHT_MAX <= CONNECTION_INFLIGHT_REQUESTS_MAX);
const _: () = assert!(DMA_READ_BYTES_MAX as u64 % DMA_ALIGNMENT_BYTES == 0);
const _: () = assert!(WRITE_BYTES_MAX as u64 % DMA_ALIGNMENT_BYTES == 0);
const _: () = assert!(PREALLOCATE_STEP_BYTES % DMA_ALIGNMENT_BYTES == 0);
const _: () = assert!(ZERO_AHEAD_BYTES % DMA_ALIGNMENT_BYTES == 0 && ZERO_AHEAD_BYTES <= PREALLOCATE_STEP_BYTES);
const _: () = assert!(TAIL_CACHE_BYTES_MAX >= MESSAGE_BYTES_MAX_DEFAULT);
