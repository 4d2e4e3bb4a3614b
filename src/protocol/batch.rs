//! Kafka v2 record batches (magic 2): validation, in-place stamping and scanning, on raw bytes.
//!
//! A v2 batch is a 61-byte big-endian header followed by the records area:
//!
//! ```text
//! @0  baseOffset i64            @8  batchLength i32 (bytes after this field; total = batchLength + 12)
//! @12 partitionLeaderEpoch i32  @16 magic i8 (= 2)
//! @17 crc u32 (CRC-32C over bytes [21..end])
//! @21 attributes i16 (bits 0-2 codec, 3 LogAppendTime, 4 transactional, 5 control, 6 delete horizon)
//! @23 lastOffsetDelta i32       @27 baseTimestamp i64         @35 maxTimestamp i64
//! @43 producerId i64            @51 producerEpoch i16         @53 baseSequence i32
//! @57 recordsCount i32          @61 records...
//! ```
//!
//! Each record of an uncompressed batch is `length varint` followed by that many body bytes:
//! `attributes i8, timestampDelta varlong, offsetDelta varint, keyLength varint (-1 = null) + key,
//! valueLength varint (-1 = null) + value, headersCount varint, headers`, where each header is
//! `keyLength varint (never null) + key, valueLength varint (-1 = null) + value`. All varints are
//! zigzag-encoded (Kafka `ByteUtils.readVarint`).
//!
//! [`split_and_validate`] applies the checks Kafka's broker applies to a client's produce
//! (`UnifiedLog.analyzeAndValidateRecords` and `LogValidator`): magic 2, a sane and complete
//! frame, the size limit, the CRC, a known codec, base offset 0, `recordsCount > 0` and
//! consistent with `lastOffsetDelta`, no control batches, a base sequence for idempotent
//! producers, no client-set LogAppendTime, and, for uncompressed batches, a bounds-checked walk
//! over every record (each length in bounds and consumed exactly, `offsetDelta` equal to the
//! record's index, exactly `recordsCount` records filling the records area). Compressed batches
//! are not decompressed. Nothing here allocates based on a length read from the input, and no
//! input can cause a panic.
//!
//! [`check_stored_batch`] and [`scan_batches`] check only the frame and the CRC. Use them for
//! bytes we wrote ourselves (crash recovery, reads from disk). [`stamp`] assigns the base
//! offset, the leader epoch and (optionally) LogAppendTime in place. [`build_batch`] builds
//! uncompressed batches for tests and benchmarks.

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the fixed v2 batch header, including `baseOffset` and `batchLength`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the part counted by `batchLength`: `baseOffset` (8) + `batchLength` (4).
pub const BATCH_OVERHEAD_BYTES: usize = 12;
/// Smallest valid `batchLength`: a header with an empty records area.
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_BYTES - BATCH_OVERHEAD_BYTES) as i32;
/// The only batch format version (magic) supported.
pub const MAGIC_V2: i8 = 2;

/// Byte position of `baseOffset` (i64).
pub const BASE_OFFSET_POS: usize = 0;
/// Byte position of `batchLength` (i32).
pub const BATCH_LENGTH_POS: usize = 8;
/// Byte position of `partitionLeaderEpoch` (i32).
pub const PARTITION_LEADER_EPOCH_POS: usize = 12;
/// Byte position of `magic` (i8).
pub const MAGIC_POS: usize = 16;
/// Byte position of `crc` (u32).
pub const CRC_POS: usize = 17;
/// Byte position of `attributes` (i16); the CRC covers everything from here to the end.
pub const ATTRIBUTES_POS: usize = 21;
/// Byte position of `lastOffsetDelta` (i32).
pub const LAST_OFFSET_DELTA_POS: usize = 23;
/// Byte position of `baseTimestamp` (i64).
pub const BASE_TIMESTAMP_POS: usize = 27;
/// Byte position of `maxTimestamp` (i64).
pub const MAX_TIMESTAMP_POS: usize = 35;
/// Byte position of `producerId` (i64).
pub const PRODUCER_ID_POS: usize = 43;
/// Byte position of `producerEpoch` (i16).
pub const PRODUCER_EPOCH_POS: usize = 51;
/// Byte position of `baseSequence` (i32).
pub const BASE_SEQUENCE_POS: usize = 53;
/// Byte position of `recordsCount` (i32).
pub const RECORDS_COUNT_POS: usize = 57;

/// Attribute bits 0-2: compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: timestamps are LogAppendTime (the broker's), not CreateTime.
pub const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
/// Attribute bit 4: the batch is part of a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit 5: the batch holds control records (transaction markers).
pub const ATTR_CONTROL: i16 = 1 << 5;
/// Attribute bit 6: `baseTimestamp` holds a delete horizon (set by compaction).
pub const ATTR_DELETE_HORIZON: i16 = 1 << 6;
/// Highest known compression codec id (zstd).
pub const MAX_COMPRESSION_CODEC: u8 = 4;

// Kafka error codes returned by `BatchError::kafka_code`.
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TIMESTAMP: i16 = 32;
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;

/// The fixed 61-byte header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the fixed header from the first 61 bytes; checks only that they are present.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let h: &[u8; BATCH_HEADER_BYTES] = buf
            .get(..BATCH_HEADER_BYTES)
            .and_then(|s| s.try_into().ok())
            .ok_or(BatchError::Truncated)?;
        Ok(BatchHeader {
            base_offset: i64::from_be_bytes(field(h, BASE_OFFSET_POS)),
            batch_length: i32::from_be_bytes(field(h, BATCH_LENGTH_POS)),
            partition_leader_epoch: i32::from_be_bytes(field(h, PARTITION_LEADER_EPOCH_POS)),
            magic: i8::from_be_bytes(field(h, MAGIC_POS)),
            crc: u32::from_be_bytes(field(h, CRC_POS)),
            attributes: i16::from_be_bytes(field(h, ATTRIBUTES_POS)),
            last_offset_delta: i32::from_be_bytes(field(h, LAST_OFFSET_DELTA_POS)),
            base_timestamp: i64::from_be_bytes(field(h, BASE_TIMESTAMP_POS)),
            max_timestamp: i64::from_be_bytes(field(h, MAX_TIMESTAMP_POS)),
            producer_id: i64::from_be_bytes(field(h, PRODUCER_ID_POS)),
            producer_epoch: i16::from_be_bytes(field(h, PRODUCER_EPOCH_POS)),
            base_sequence: i32::from_be_bytes(field(h, BASE_SEQUENCE_POS)),
            records_count: i32::from_be_bytes(field(h, RECORDS_COUNT_POS)),
        })
    }

    /// Total size of the batch in bytes: `batch_length + 12`. A negative `batch_length`
    /// (rejected by validation) is treated as 0.
    pub fn total_bytes(&self) -> usize {
        usize::try_from(self.batch_length).unwrap_or(0) + BATCH_OVERHEAD_BYTES
    }

    /// Offset of the batch's last record: `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// Offset that follows this batch: `last_offset() + 1`.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// Compression codec id: `attributes & 7` (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }

    /// Whether the batch is part of a transaction (attribute bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch holds control records (attribute bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether timestamps are LogAppendTime (attribute bit 3).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    /// Whether compaction set a delete horizon (attribute bit 6).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & ATTR_DELETE_HORIZON != 0
    }

    /// Whether the batch comes from an idempotent or transactional producer (`producer_id >= 0`).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Copies the `N` bytes at `at` out of a header. `at + N <= 61` for every call in this module.
fn field<const N: usize>(h: &[u8; BATCH_HEADER_BYTES], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&h[at..at + N]);
    out
}

/// Why a batch (or a produce request's `records` field) was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum BatchError {
    /// The `records` field held no bytes at all.
    #[error("produce request partition contains no record batches")]
    Empty,
    /// The header or the body of a batch extends past the end of the buffer.
    #[error("record batch is truncated")]
    Truncated,
    /// The magic byte is not 2 (legacy message sets v0/v1 or garbage).
    #[error("unsupported record batch magic {0}; only magic 2 is supported")]
    UnsupportedMagic(i8),
    /// `batchLength` is below the 49-byte minimum (this includes negative values and zeros).
    #[error("invalid record batch length (below the {MIN_BATCH_LENGTH}-byte minimum)")]
    InvalidLength,
    /// The stored CRC-32C does not match the bytes.
    #[error(
        "record batch is corrupt (stored crc = {stored:#010x}, computed crc = {computed:#010x})"
    )]
    CrcMismatch { stored: u32, computed: u32 },
    /// `recordsCount <= 0`, or it disagrees with `lastOffsetDelta + 1`.
    #[error("invalid record count or offset range in record batch")]
    InvalidRecordCount,
    /// A record inside an uncompressed batch is malformed or inconsistent with the header.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// The whole batch is larger than the configured maximum.
    #[error("record batch of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// Compression codec id 5, 6 or 7.
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    /// Clients must not write control batches (transaction markers).
    #[error("clients are not allowed to write control records")]
    ControlBatchFromClient,
    /// A batch in a produce request has a `baseOffset` other than 0.
    #[error("the base offset of a produced record batch must be 0, but it is {0}")]
    NonZeroBaseOffset(i64),
    /// An idempotent/transactional batch (`producerId >= 0`) has a negative `baseSequence`.
    #[error(
        "invalid sequence number {base_sequence} in record batch with producer id {producer_id}"
    )]
    InvalidSequence {
        producer_id: i64,
        base_sequence: i32,
    },
    /// The client set the LogAppendTime attribute, which only the broker may set.
    #[error("producers must not set the timestamp type to LogAppendTime")]
    LogAppendTimeFromClient,
}

impl BatchError {
    /// The Kafka error code to answer a producer with.
    ///
    /// * `CORRUPT_MESSAGE` (2) — truncation, bad `batchLength`, CRC mismatch. Clients retry on
    ///   this code, so it is only used where the bytes may have been damaged in transit.
    /// * `MESSAGE_TOO_LARGE` (10) — `TooLarge`.
    /// * `INVALID_TIMESTAMP` (32) — `LogAppendTimeFromClient` (Kafka's `LogValidator.validateTimestamp`).
    /// * `UNSUPPORTED_FOR_MESSAGE_FORMAT` (43) — magic other than 2.
    /// * `UNSUPPORTED_COMPRESSION_TYPE` (76) — codec id above 4.
    /// * `INVALID_RECORD` (87) — everything that passed the CRC but is still wrong: empty input,
    ///   record counts, control batches, base offset, sequence, and malformed records. This follows
    ///   Kafka, whose `DefaultRecord.readFrom` and `LogValidator` throw `InvalidRecordException`
    ///   for these. The client does not retry on this code, and a retry would send the same bytes.
    pub fn kafka_code(&self) -> i16 {
        match self {
            BatchError::Truncated | BatchError::InvalidLength | BatchError::CrcMismatch { .. } => {
                CORRUPT_MESSAGE
            }
            BatchError::TooLarge { .. } => MESSAGE_TOO_LARGE,
            BatchError::LogAppendTimeFromClient => INVALID_TIMESTAMP,
            BatchError::UnsupportedMagic(_) => UNSUPPORTED_FOR_MESSAGE_FORMAT,
            BatchError::UnknownCompression(_) => UNSUPPORTED_COMPRESSION_TYPE,
            BatchError::Empty
            | BatchError::InvalidRecordCount
            | BatchError::InvalidRecord(_)
            | BatchError::ControlBatchFromClient
            | BatchError::NonZeroBaseOffset(_)
            | BatchError::InvalidSequence { .. } => INVALID_RECORD,
        }
    }
}

/// A batch found inside a produce request's `records` bytes: its header and byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSpan {
    pub header: BatchHeader,
    /// Offset of the batch's first byte in the scanned buffer.
    pub start: usize,
    /// One past the batch's last byte (`start + header.total_bytes()`).
    pub end: usize,
}

impl BatchSpan {
    /// The batch's bytes within the buffer that was scanned or validated.
    /// Returns `None` if `buf` is not that buffer (too short).
    pub fn bytes<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        buf.get(self.start..self.end)
    }
}

// ---------------------------------------------------------------------------------------------
// Varints
// ---------------------------------------------------------------------------------------------

/// Decodes a zigzag varint (Kafka `ByteUtils.readVarint`) from the start of `buf`.
///
/// Returns the value and the number of bytes consumed, or `None` if `buf` ends before the
/// varint does, or the encoding is longer than 5 bytes or overflows 32 bits.
pub fn read_varint(buf: &[u8]) -> Option<(i32, usize)> {
    let mut raw: u32 = 0;
    for i in 0..5 {
        let b = *buf.get(i)?;
        raw |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i == 4 && b > 0x0f {
                return None; // bits beyond the 32nd
            }
            return Some((((raw >> 1) as i32) ^ -((raw & 1) as i32), i + 1));
        }
    }
    None
}

/// Decodes a zigzag varlong (Kafka `ByteUtils.readVarlong`) from the start of `buf`.
///
/// Returns the value and the number of bytes consumed, or `None` if `buf` ends before the
/// varlong does, or the encoding is longer than 10 bytes or overflows 64 bits.
pub fn read_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(i)?;
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i == 9 && b > 0x01 {
                return None; // bits beyond the 64th
            }
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

/// Appends `v` as a zigzag varint.
pub fn put_varint(out: &mut BytesMut, v: i32) {
    let mut u = ((v << 1) ^ (v >> 31)) as u32;
    while u >= 0x80 {
        out.put_u8((u as u8) | 0x80);
        u >>= 7;
    }
    out.put_u8(u as u8);
}

/// Appends `v` as a zigzag varlong.
pub fn put_varlong(out: &mut BytesMut, v: i64) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.put_u8((u as u8) | 0x80);
        u >>= 7;
    }
    out.put_u8(u as u8);
}

/// Number of bytes `put_varint(v)` writes (1 to 5).
pub fn varint_size(v: i32) -> usize {
    let u = ((v << 1) ^ (v >> 31)) as u32;
    (32 - u.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Number of bytes `put_varlong(v)` writes (1 to 10).
pub fn varlong_size(v: i64) -> usize {
    let u = ((v << 1) ^ (v >> 63)) as u64;
    (64 - u.leading_zeros() as usize).max(1).div_ceil(7)
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Checks what every batch must satisfy, whoever wrote it: magic 2, `batchLength >= 49`, the
/// whole batch present at the start of `buf` (trailing bytes are ignored), and the CRC.
fn check_frame(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    // Look at the magic first, so that a legacy (v0/v1) message set, which may be shorter
    // than a v2 header, is reported as an unsupported format rather than as corrupt.
    if let Some(&magic) = buf.get(MAGIC_POS) {
        if magic as i8 != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic as i8));
        }
    }
    let length_bytes = buf
        .get(BATCH_LENGTH_POS..BATCH_LENGTH_POS + 4)
        .ok_or(BatchError::Truncated)?;
    let mut length = [0u8; 4];
    length.copy_from_slice(length_bytes);
    if i32::from_be_bytes(length) < MIN_BATCH_LENGTH {
        return Err(BatchError::InvalidLength);
    }
    let header = BatchHeader::parse(buf)?;
    let body = buf
        .get(ATTRIBUTES_POS..header.total_bytes())
        .ok_or(BatchError::Truncated)?;
    let computed = crc32c::crc32c(body);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Fully validates the one batch at the start of `buf` as a client's produce would be.
/// Trailing bytes after the batch are ignored.
fn validate_client_batch(buf: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    // The size limit is checked before the CRC (as Kafka does), but after the completeness check,
    // so that a damaged length field reads as corruption rather than as an oversized batch.
    if let Some(header) = BatchHeader::parse(buf).ok().filter(|h| h.magic == MAGIC_V2) {
        let size = header.total_bytes();
        if header.batch_length >= MIN_BATCH_LENGTH && size <= buf.len() && size > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size,
                max: max_batch_bytes,
            });
        }
    }
    let header = check_frame(buf)?;

    let codec = header.compression();
    if codec > MAX_COMPRESSION_CODEC {
        return Err(BatchError::UnknownCompression(codec));
    }
    if header.base_offset != 0 {
        return Err(BatchError::NonZeroBaseOffset(header.base_offset));
    }
    if header.records_count <= 0
        || i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1
    {
        return Err(BatchError::InvalidRecordCount);
    }
    if header.is_control() {
        return Err(BatchError::ControlBatchFromClient);
    }
    if header.has_producer_id() && header.base_sequence < 0 {
        return Err(BatchError::InvalidSequence {
            producer_id: header.producer_id,
            base_sequence: header.base_sequence,
        });
    }
    if header.is_log_append_time() {
        return Err(BatchError::LogAppendTimeFromClient);
    }
    if codec == 0 {
        let records = buf
            .get(BATCH_HEADER_BYTES..header.total_bytes())
            .ok_or(BatchError::Truncated)?;
        walk_records(records, header.records_count)?;
    }
    Ok(header)
}

/// Splits a Produce request partition's `records` field into batches and fully validates each.
///
/// Checks, per batch: magic 2; `batchLength >= 49`; the whole batch present; total size
/// `<= max_batch_bytes`; CRC-32C; codec `<= 4`; `baseOffset == 0`;
/// `recordsCount > 0` and `== lastOffsetDelta + 1`; not a control batch; `baseSequence >= 0`
/// when `producerId >= 0`; LogAppendTime not set; and, for uncompressed batches, that exactly
/// `recordsCount` well-formed records with `offsetDelta` equal to their index fill the records
/// area exactly. The input must end exactly at a batch boundary, and empty input is an error.
///
/// Kafka additionally rejects more than one batch per partition for produce v3+; this function
/// accepts several and the caller may enforce that rule if it wants to.
pub fn split_and_validate(
    records: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchSpan>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut spans = Vec::new();
    let mut start = 0;
    while let Some(rest) = records.get(start..).filter(|r| !r.is_empty()) {
        let header = validate_client_batch(rest, max_batch_bytes)?;
        let end = start + header.total_bytes();
        spans.push(BatchSpan { header, start, end });
        start = end;
    }
    Ok(spans)
}

/// Validates the CRC and structure of one stored batch at the start of `buf` (used by recovery
/// and by fetch-from-disk readers): header present, magic 2, `batchLength >= 49`, complete,
/// CRC matches. Does not walk records. Bytes after the batch are ignored.
pub fn check_stored_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    check_frame(buf)
}

/// Walks a buffer of stored batches (e.g. a segment file read during crash recovery) from
/// the start and returns the spans of consecutive complete, CRC-valid batches, stopping at the
/// first one that is truncated or invalid. The second value says why the scan stopped: `None`
/// means the buffer ended exactly at a batch boundary. A zero-filled tail stops the scan
/// (it reads as magic 0, i.e. `UnsupportedMagic(0)`, or as `Truncated` if under 17 bytes).
pub fn scan_batches(buf: &[u8]) -> (Vec<BatchSpan>, Option<BatchError>) {
    let mut spans = Vec::new();
    let mut start = 0;
    while let Some(rest) = buf.get(start..).filter(|r| !r.is_empty()) {
        match check_frame(rest) {
            Ok(header) => {
                let end = start + header.total_bytes();
                spans.push(BatchSpan { header, start, end });
                start = end;
            }
            Err(e) => return (spans, Some(e)),
        }
    }
    (spans, None)
}

/// Bounds-checked reader over one record body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        let b = *self.buf.get(self.pos).ok_or("record body ends early")?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<i32, &'static str> {
        let (v, n) = read_varint(self.rest()).ok_or("bad or truncated varint")?;
        self.pos += n;
        Ok(v)
    }

    fn varlong(&mut self) -> Result<i64, &'static str> {
        let (v, n) = read_varlong(self.rest()).ok_or("bad or truncated varlong")?;
        self.pos += n;
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> Result<(), &'static str> {
        if n > self.remaining() {
            return Err("field length runs past the end of the record");
        }
        self.pos += n;
        Ok(())
    }

    /// A `length varint + bytes` field; `-1` means null when `nullable`, and any other
    /// negative length fails with `negative`.
    fn bytes_field(&mut self, nullable: bool, negative: &'static str) -> Result<(), &'static str> {
        let len = self.varint()?;
        if len == -1 && nullable {
            return Ok(());
        }
        let len = usize::try_from(len).map_err(|_| negative)?;
        self.skip(len)
    }
}

/// Walks the records area of an uncompressed batch: exactly `count` records, each with an
/// in-bounds length that its body fills exactly, and `offsetDelta` equal to its index.
fn walk_records(records: &[u8], count: i32) -> Result<(), BatchError> {
    let mut pos = 0usize;
    for index in 0..count {
        let rest = records.get(pos..).unwrap_or(&[]);
        if rest.is_empty() {
            return Err(BatchError::InvalidRecord(format!(
                "batch declares {count} records but holds only {index}"
            )));
        }
        let (len, n) = read_varint(rest).ok_or_else(|| {
            BatchError::InvalidRecord(format!("record {index}: bad or truncated length varint"))
        })?;
        let body = usize::try_from(len)
            .ok()
            .and_then(|len| rest.get(n..n.checked_add(len)?))
            .ok_or_else(|| {
                BatchError::InvalidRecord(format!(
                    "record {index}: length {len} does not fit in the batch"
                ))
            })?;
        walk_record_body(body, index)
            .map_err(|msg| BatchError::InvalidRecord(format!("record {index}: {msg}")))?;
        pos += n + body.len();
    }
    if pos != records.len() {
        return Err(BatchError::InvalidRecord(format!(
            "{} bytes left after the {count} declared records",
            records.len().saturating_sub(pos)
        )));
    }
    Ok(())
}

fn walk_record_body(body: &[u8], index: i32) -> Result<(), &'static str> {
    let mut r = Reader::new(body);
    r.u8()?; // attributes (unused in v2)
    r.varlong()?; // timestampDelta
    if r.varint()? != index {
        return Err("offsetDelta does not match the record's position in the batch");
    }
    r.bytes_field(true, "key length below -1")?;
    r.bytes_field(true, "value length below -1")?;
    let headers = r.varint()?;
    if headers < 0 {
        return Err("negative header count");
    }
    for _ in 0..headers {
        // Every header takes at least 2 bytes, so this loop ends quickly on short input.
        r.bytes_field(false, "negative header key length")?;
        r.bytes_field(true, "header value length below -1")?;
    }
    if r.remaining() != 0 {
        return Err("record length exceeds the fields it contains");
    }
    Ok(())
}

/// One record's key and value, read from an uncompressed batch.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValueRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Reads the keys and values of the uncompressed batch at the start of `buf` after checking
/// it (CRC, structure, every record walked first), so lying lengths or counts cannot make it
/// allocate or panic. Compressed batches are rejected with `InvalidRecord`: the callers (the
/// group coordinator's loader) only write uncompressed ones.
pub fn key_values(buf: &Bytes) -> Result<(BatchHeader, Vec<KeyValueRecord>), BatchError> {
    let header = check_frame(buf)?;
    if header.compression() != 0 {
        return Err(BatchError::InvalidRecord("compressed batch where uncompressed was expected".into()));
    }
    let end = header.total_bytes();
    let records = buf.get(BATCH_HEADER_BYTES..end).ok_or(BatchError::Truncated)?;
    walk_records(records, header.records_count)?;
    let mut out = Vec::with_capacity(header.records_count.max(0) as usize);
    let mut pos = BATCH_HEADER_BYTES;
    let bad = |m: &'static str| BatchError::InvalidRecord(m.to_string());
    for _ in 0..header.records_count {
        let (len, n) = read_varint(&buf[pos..end]).ok_or_else(|| bad("record length"))?;
        let body_start = pos + n;
        let body_end = body_start + len as usize;
        let mut r = Reader::new(&buf[body_start..body_end]);
        r.u8().map_err(bad)?;
        r.varlong().map_err(bad)?;
        let delta = r.varint().map_err(bad)?;
        let field = |r: &mut Reader<'_>| -> Result<Option<Bytes>, BatchError> {
            let l = r.varint().map_err(bad)?;
            if l < 0 {
                return Ok(None);
            }
            let s = body_start + r.pos;
            r.skip(l as usize).map_err(bad)?;
            Ok(Some(buf.slice(s..s + l as usize)))
        };
        let key = field(&mut r)?;
        let value = field(&mut r)?;
        out.push(KeyValueRecord { offset: header.base_offset + delta as i64, key, value });
        pos = body_end;
    }
    Ok((header, out))
}

/// Builds a transaction marker: a control batch of `producer_id`/`epoch` holding one
/// record whose key is (version 0, type 1 = commit / 0 = abort) and whose value is
/// (version 0, coordinator epoch). Base offset 0: the log stamps it.
pub fn build_control_batch(producer_id: i64, epoch: i16, commit: bool, coordinator_epoch: i32, timestamp: i64) -> BytesMut {
    let key = [0u8, 0, 0, if commit { 1 } else { 0 }];
    let mut value = vec![0u8, 0];
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut b = build_batch(&[(Some(&key[..]), Some(&value[..]))], timestamp);
    b[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL).to_be_bytes());
    b[PRODUCER_ID_POS..PRODUCER_ID_POS + 8].copy_from_slice(&producer_id.to_be_bytes());
    b[PRODUCER_EPOCH_POS..PRODUCER_EPOCH_POS + 2].copy_from_slice(&epoch.to_be_bytes());
    b[BASE_SEQUENCE_POS..BASE_SEQUENCE_POS + 4].copy_from_slice(&(-1i32).to_be_bytes());
    let _ = fix_crc(&mut b);
    b
}

/// For a control batch at the start of `buf`: `Some(true)` for a commit marker,
/// `Some(false)` for an abort marker, `None` for anything else or unreadable bytes.
pub fn control_marker(buf: &[u8]) -> Option<bool> {
    let header = BatchHeader::parse(buf).ok()?;
    if !header.is_control() || header.records_count < 1 {
        return None;
    }
    let rest = buf.get(BATCH_HEADER_BYTES..header.total_bytes().min(buf.len()))?;
    let (_, n) = read_varint(rest)?;
    let mut r = Reader::new(rest.get(n..)?);
    r.u8().ok()?;
    r.varlong().ok()?;
    r.varint().ok()?;
    let key_len = r.varint().ok()?;
    if key_len < 4 {
        return None;
    }
    let key = r.rest().get(..4)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Stamping
// ---------------------------------------------------------------------------------------------

/// Stamps a validated batch in place: `baseOffset` and `partitionLeaderEpoch` (both outside the
/// CRC), and, when `log_append_time` is `Some(ts)`, the LogAppendTime attribute and
/// `maxTimestamp = ts`, then recomputes the CRC. `baseTimestamp` and the records are left
/// unchanged, as in Kafka's `DefaultRecordBatch.setMaxTimestamp`. `batch` must start with the
/// batch; bytes after it are left alone.
///
/// This must only be called on a batch that passed validation. If the header is missing or the
/// batch is incomplete, debug builds panic and release builds leave `batch` unchanged
/// ([`try_stamp`] reports the error instead).
pub fn stamp(
    batch: &mut [u8],
    base_offset: i64,
    partition_leader_epoch: i32,
    log_append_time: Option<i64>,
) {
    let result = try_stamp(batch, base_offset, partition_leader_epoch, log_append_time);
    debug_assert!(result.is_ok(), "stamp on an invalid batch: {result:?}");
}

/// Like [`stamp`], but returns an error (and leaves `batch` unchanged) if `batch` does not start
/// with a complete batch whose `batchLength` is at least 49. The CRC is not checked.
pub fn try_stamp(
    batch: &mut [u8],
    base_offset: i64,
    partition_leader_epoch: i32,
    log_append_time: Option<i64>,
) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::InvalidLength);
    }
    let total = header.total_bytes();
    if total > batch.len() {
        return Err(BatchError::Truncated);
    }
    put(batch, BASE_OFFSET_POS, &base_offset.to_be_bytes());
    put(
        batch,
        PARTITION_LEADER_EPOCH_POS,
        &partition_leader_epoch.to_be_bytes(),
    );
    if let Some(ts) = log_append_time {
        let attributes = header.attributes | ATTR_LOG_APPEND_TIME;
        if attributes != header.attributes || header.max_timestamp != ts {
            put(batch, ATTRIBUTES_POS, &attributes.to_be_bytes());
            put(batch, MAX_TIMESTAMP_POS, &ts.to_be_bytes());
            let crc = crc32c::crc32c(&batch[ATTRIBUTES_POS..total]);
            put(batch, CRC_POS, &crc.to_be_bytes());
        }
    }
    Ok(())
}

/// Writes `bytes` at `at`. Callers have checked that `batch` holds a full header.
fn put(batch: &mut [u8], at: usize, bytes: &[u8]) {
    batch[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Recomputes and stores the CRC of the batch at the start of `batch`, after its attributes or
/// later fields were edited. Fails, leaving `batch` unchanged, as [`try_stamp`] does.
pub fn fix_crc(batch: &mut [u8]) -> Result<u32, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::InvalidLength);
    }
    let body = batch
        .get(ATTRIBUTES_POS..header.total_bytes())
        .ok_or(BatchError::Truncated)?;
    let crc = crc32c::crc32c(body);
    put(batch, CRC_POS, &crc.to_be_bytes());
    Ok(crc)
}

// ---------------------------------------------------------------------------------------------
// Building (tests and benchmarks)
// ---------------------------------------------------------------------------------------------

/// One record for [`build_batch`]: `(key, value)`, `None` meaning null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// One record for [`build_batch_with_headers`]: key, value, and headers as (key, value) pairs.
pub type BuildRecord<'a> = (
    Option<&'a [u8]>,
    Option<&'a [u8]>,
    &'a [(&'a str, Option<&'a [u8]>)],
);

/// Builds an uncompressed v2 batch (base offset 0, leader epoch -1, producer id -1, epoch -1,
/// sequence -1, CreateTime) from (key, value) records, with the given base timestamp and
/// per-record timestamp deltas of 0. An empty `records` gives a batch with `recordsCount` 0,
/// which validation rejects.
///
/// # Panics
/// If a key or value is longer than `i32::MAX` bytes or there are more than `i32::MAX` records.
pub fn build_batch(records: &[KeyValue<'_>], base_timestamp: i64) -> BytesMut {
    let with_headers: Vec<BuildRecord<'_>> =
        records.iter().map(|&(k, v)| (k, v, &[][..])).collect();
    build_batch_with_headers(&with_headers, base_timestamp)
}

/// Like [`build_batch`], but each record also carries headers.
///
/// # Panics
/// If a key, value, header or record is longer than `i32::MAX` bytes or there are more than
/// `i32::MAX` records or headers.
pub fn build_batch_with_headers(records: &[BuildRecord<'_>], base_timestamp: i64) -> BytesMut {
    fn len_i32(n: usize) -> i32 {
        i32::try_from(n).expect("length exceeds i32::MAX")
    }
    fn put_nullable(out: &mut BytesMut, b: Option<&[u8]>) {
        match b {
            None => put_varint(out, -1),
            Some(b) => {
                put_varint(out, len_i32(b.len()));
                out.put_slice(b);
            }
        }
    }

    let count = len_i32(records.len());
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + records.len() * 16);
    out.put_i64(0); // baseOffset
    out.put_i32(0); // batchLength, patched below
    out.put_i32(-1); // partitionLeaderEpoch
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // crc, patched below
    out.put_i16(0); // attributes: no compression, CreateTime
    out.put_i32(count - 1); // lastOffsetDelta
    out.put_i64(base_timestamp);
    out.put_i64(base_timestamp); // maxTimestamp: every delta is 0
    out.put_i64(-1); // producerId
    out.put_i16(-1); // producerEpoch
    out.put_i32(-1); // baseSequence
    out.put_i32(count);

    let mut body = BytesMut::new();
    for (index, &(key, value, headers)) in records.iter().enumerate() {
        body.clear();
        body.put_i8(0); // attributes
        put_varlong(&mut body, 0); // timestampDelta
        put_varint(&mut body, len_i32(index));
        put_nullable(&mut body, key);
        put_nullable(&mut body, value);
        put_varint(&mut body, len_i32(headers.len()));
        for &(hkey, hvalue) in headers {
            put_nullable(&mut body, Some(hkey.as_bytes()));
            put_nullable(&mut body, hvalue);
        }
        put_varint(&mut out, len_i32(body.len()));
        out.put_slice(&body);
    }

    let batch_length = len_i32(out.len() - BATCH_OVERHEAD_BYTES);
    out[BATCH_LENGTH_POS..BATCH_LENGTH_POS + 4].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_POS..]);
    out[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    const MAX: usize = 1 << 20;

    fn sample() -> BytesMut {
        build_batch(
            &[
                (Some(b"k1"), Some(b"value one")),
                (None, Some(b"v2")),
                (Some(b"k3"), None),
                (Some(b""), Some(b"")),
            ],
            1_700_000_000_000,
        )
    }

    fn sample_with_headers() -> BytesMut {
        let h1: &[(&str, Option<&[u8]>)] = &[("trace", Some(b"abc")), ("nullh", None)];
        build_batch_with_headers(
            &[
                (Some(b"k".as_slice()), Some(b"v".as_slice()), h1),
                (None, None, &[]),
                (
                    Some(b"key3".as_slice()),
                    Some(&[7u8; 300][..]),
                    &[("", Some(b"".as_slice()))],
                ),
            ],
            42,
        )
    }

    fn set_i32(buf: &mut [u8], at: usize, v: i32) {
        buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn set_i16(buf: &mut [u8], at: usize, v: i16) {
        buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn set_i64(buf: &mut [u8], at: usize, v: i64) {
        buf[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    /// A batch with the given raw records area and header count fields, with a correct CRC.
    fn raw_batch(records_area: &[u8], count: i32) -> BytesMut {
        let mut b = build_batch(&[], 0);
        b.truncate(BATCH_HEADER_BYTES);
        b.put_slice(records_area);
        let len = (b.len() - BATCH_OVERHEAD_BYTES) as i32;
        set_i32(&mut b, BATCH_LENGTH_POS, len);
        set_i32(&mut b, LAST_OFFSET_DELTA_POS, count - 1);
        set_i32(&mut b, RECORDS_COUNT_POS, count);
        fix_crc(&mut b).unwrap();
        b
    }

    /// Encodes one record body (with its length prefix) from raw varint-level parts.
    fn raw_record(parts: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut body = BytesMut::new();
        parts(&mut body);
        let mut out = BytesMut::new();
        put_varint(&mut out, body.len() as i32);
        out.put_slice(&body);
        out
    }

    fn simple_record_body(body: &mut BytesMut, offset_delta: i32) {
        body.put_i8(0);
        put_varlong(body, 0);
        put_varint(body, offset_delta);
        put_varint(body, 1);
        body.put_u8(b'k');
        put_varint(body, 1);
        body.put_u8(b'v');
        put_varint(body, 0);
    }

    fn expect_invalid_record(buf: &[u8]) -> String {
        match split_and_validate(buf, MAX) {
            Err(BatchError::InvalidRecord(msg)) => msg,
            other => panic!("expected InvalidRecord, got {other:?}"),
        }
    }

    #[test]
    fn good_batch_validates() {
        let b = sample();
        let spans = split_and_validate(&b, MAX).unwrap();
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!((s.start, s.end), (0, b.len()));
        assert_eq!(s.bytes(&b), Some(&b[..]));
        let h = s.header;
        assert_eq!(h.total_bytes(), b.len());
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.magic, 2);
        assert_eq!(h.records_count, 4);
        assert_eq!(h.last_offset_delta, 3);
        assert_eq!(h.last_offset(), 3);
        assert_eq!(h.next_offset(), 4);
        assert_eq!(h.compression(), 0);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        assert_eq!(h.partition_leader_epoch, -1);
        assert_eq!(
            (h.base_timestamp, h.max_timestamp),
            (1_700_000_000_000, 1_700_000_000_000)
        );
        assert!(!h.is_transactional() && !h.is_control() && !h.is_log_append_time());
        assert!(!h.has_delete_horizon() && !h.has_producer_id());
        assert_eq!(check_stored_batch(&b), Ok(h));
        assert_eq!(BatchHeader::parse(&b), Ok(h));

        let hb = sample_with_headers();
        assert_eq!(split_and_validate(&hb, MAX).unwrap().len(), 1);
        let one = build_batch(&[(None, None)], -1);
        assert_eq!(
            split_and_validate(&one, MAX).unwrap()[0]
                .header
                .records_count,
            1
        );
    }

    #[test]
    fn build_batch_decodes_with_kafka_protocol() {
        let b = sample();
        let mut bytes = b.clone().freeze();
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert!(bytes.is_empty());
        assert_eq!(set.version, 2);
        assert_eq!(set.compression, Compression::None);
        let expected: [KeyValue<'_>; 4] = [
            (Some(b"k1"), Some(b"value one")),
            (None, Some(b"v2")),
            (Some(b"k3"), None),
            (Some(b""), Some(b"")),
        ];
        assert_eq!(set.records.len(), expected.len());
        for (i, (r, (k, v))) in set.records.iter().zip(expected).enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.timestamp, 1_700_000_000_000);
            assert_eq!(r.timestamp_type, TimestampType::Creation);
            assert_eq!(r.key.as_deref(), k);
            assert_eq!(r.value.as_deref(), v);
            assert_eq!(r.producer_id, -1);
            assert_eq!(r.producer_epoch, -1);
            // (kafka-protocol derives a per-record sequence even when baseSequence is -1.)
            assert!(r.headers.is_empty());
        }

        let mut bytes = sample_with_headers().freeze();
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(set.records.len(), 3);
        let r0 = &set.records[0];
        assert_eq!(r0.headers.len(), 2);
        assert_eq!(
            r0.headers.get(&b"trace"[..]).cloned(),
            Some(Some(Bytes::from_static(b"abc")))
        );
        assert_eq!(r0.headers.get(&b"nullh"[..]).cloned(), Some(None));
        assert_eq!(set.records[1].key, None);
        assert_eq!(set.records[1].value, None);
        assert_eq!(set.records[2].value.as_deref(), Some(&[7u8; 300][..]));
        assert_eq!(
            set.records[2].headers.get(&b""[..]).cloned(),
            Some(Some(Bytes::new()))
        );
        assert_eq!(set.records[2].offset, 2);
        assert_eq!(set.records[2].timestamp, 42);
    }

    /// Batches written by another encoder (kafka-protocol's), including compressed ones,
    /// an idempotent producer and a transactional one, are accepted.
    #[test]
    fn accepts_kafka_protocol_encoded_batches() {
        let mut template = RecordBatchDecoder::decode(&mut sample_with_headers().freeze())
            .unwrap()
            .records;
        for (i, r) in template.iter_mut().enumerate() {
            r.producer_id = 77;
            r.producer_epoch = 3;
            r.sequence = 10 + i as i32;
            r.timestamp = 1000 + i as i64;
        }
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            for transactional in [false, true] {
                let records: Vec<Record> = template
                    .iter()
                    .cloned()
                    .map(|mut r| {
                        r.transactional = transactional;
                        r
                    })
                    .collect();
                let mut buf = BytesMut::new();
                let options = RecordEncodeOptions {
                    version: 2,
                    compression,
                };
                // The crate is built without kafka-protocol's codecs, so "compress" by reversing
                // the records area: only the codec bits matter here, as compressed batches are
                // not walked.
                let reverse = |src: &mut BytesMut, dst: &mut BytesMut, _: Compression| {
                    dst.extend(src.iter().rev());
                    Ok(())
                };
                if compression == Compression::None {
                    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
                } else {
                    RecordBatchEncoder::encode_with_custom_compression(
                        &mut buf,
                        &records,
                        &options,
                        Some(reverse),
                    )
                    .unwrap();
                }
                let spans = split_and_validate(&buf, MAX)
                    .unwrap_or_else(|e| panic!("{compression:?} rejected: {e}"));
                assert_eq!(spans.len(), 1);
                let h = spans[0].header;
                assert_eq!(h.compression(), compression as u8);
                assert_eq!(h.records_count, 3);
                assert_eq!(
                    (h.producer_id, h.producer_epoch, h.base_sequence),
                    (77, 3, 10)
                );
                assert_eq!(h.is_transactional(), transactional);
                assert_eq!(h.max_timestamp, 1002);
            }
        }
    }

    #[test]
    fn corrupt_byte_is_crc_mismatch() {
        let good = sample();
        for at in [ATTRIBUTES_POS, 30, BATCH_HEADER_BYTES, good.len() - 1] {
            let mut b = good.clone();
            b[at] ^= 0x01;
            match split_and_validate(&b, MAX) {
                Err(e @ BatchError::CrcMismatch { stored, computed }) => {
                    assert_ne!(stored, computed);
                    assert_eq!(e.kafka_code(), 2);
                }
                other => panic!("flip at {at}: {other:?}"),
            }
            assert!(matches!(
                check_stored_batch(&b),
                Err(BatchError::CrcMismatch { .. })
            ));
        }
        let mut b = good.clone();
        b[CRC_POS] ^= 0x80;
        assert!(matches!(
            split_and_validate(&b, MAX),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn truncated_is_rejected() {
        let b = sample();
        assert_eq!(split_and_validate(&[], MAX), Err(BatchError::Empty));
        for len in 1..b.len() {
            let r = split_and_validate(&b[..len], MAX);
            assert_eq!(
                r.unwrap_err(),
                BatchError::Truncated,
                "prefix of {len} bytes"
            );
            assert_eq!(check_stored_batch(&b[..len]), Err(BatchError::Truncated));
        }
        assert_eq!(BatchHeader::parse(&b[..60]), Err(BatchError::Truncated));
        assert!(BatchHeader::parse(&b[..61]).is_ok());
    }

    #[test]
    fn lying_records_count_is_rejected() {
        let good = sample(); // 4 records
                             // recordsCount disagrees with lastOffsetDelta.
        let mut b = good.clone();
        set_i32(&mut b, RECORDS_COUNT_POS, 5);
        fix_crc(&mut b).unwrap();
        assert_eq!(
            split_and_validate(&b, MAX),
            Err(BatchError::InvalidRecordCount)
        );
        assert_eq!(BatchError::InvalidRecordCount.kafka_code(), 87);
        // Zero, negative, and an overflowing lastOffsetDelta.
        for (count, lod) in [
            (0, -1),
            (-1, -2),
            (i32::MIN, i32::MAX),
            (i32::MIN, i32::MIN),
        ] {
            let mut b = good.clone();
            set_i32(&mut b, RECORDS_COUNT_POS, count);
            set_i32(&mut b, LAST_OFFSET_DELTA_POS, lod);
            fix_crc(&mut b).unwrap();
            assert_eq!(
                split_and_validate(&b, MAX),
                Err(BatchError::InvalidRecordCount)
            );
        }
        // Consistent header fields claiming more records than are present.
        for count in [5, 1000, i32::MAX] {
            let mut b = good.clone();
            set_i32(&mut b, RECORDS_COUNT_POS, count);
            set_i32(&mut b, LAST_OFFSET_DELTA_POS, count - 1);
            fix_crc(&mut b).unwrap();
            let msg = expect_invalid_record(&b);
            assert!(msg.contains("holds only 4"), "{msg}");
        }
        // ... and fewer records than are present.
        let mut b = good.clone();
        set_i32(&mut b, RECORDS_COUNT_POS, 3);
        set_i32(&mut b, LAST_OFFSET_DELTA_POS, 2);
        fix_crc(&mut b).unwrap();
        let msg = expect_invalid_record(&b);
        assert!(msg.contains("left after"), "{msg}");
    }

    #[test]
    fn lying_record_length_is_rejected() {
        let good = build_batch(&[(Some(b"key"), Some(b"value"))], 5);
        let (len, n) = read_varint(&good[BATCH_HEADER_BYTES..]).unwrap();
        assert_eq!(n, 1);
        // Too long (runs past the batch), too short (fields overrun the record), negative.
        for fake in [len + 1, len - 1, len + 40, 0, -1, -64] {
            let mut b = good.clone();
            let mut v = BytesMut::new();
            put_varint(&mut v, fake);
            assert_eq!(v.len(), 1, "keep the record area size");
            b[BATCH_HEADER_BYTES] = v[0];
            fix_crc(&mut b).unwrap();
            let err = split_and_validate(&b, MAX).unwrap_err();
            assert!(
                matches!(err, BatchError::InvalidRecord(_)),
                "length {fake}: {err:?}"
            );
            assert_eq!(err.kafka_code(), 87);
        }
        // A 5-byte varint that overflows 32 bits.
        let mut area = BytesMut::new();
        area.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x7f]);
        expect_invalid_record(&raw_batch(&area, 1));
    }

    #[test]
    fn malformed_record_fields_are_rejected() {
        type Case = (&'static str, fn(&mut BytesMut));
        let cases: &[Case] = &[
            ("key length -2", |b| {
                b.put_i8(0);
                put_varlong(b, 0);
                put_varint(b, 0);
                put_varint(b, -2);
                put_varint(b, -1);
                put_varint(b, 0);
            }),
            ("value length -5", |b| {
                b.put_i8(0);
                put_varlong(b, 0);
                put_varint(b, 0);
                put_varint(b, -1);
                put_varint(b, -5);
                put_varint(b, 0);
            }),
            ("header count -1", |b| {
                b.put_i8(0);
                put_varlong(b, 0);
                put_varint(b, 0);
                put_varint(b, -1);
                put_varint(b, -1);
                put_varint(b, -1);
            }),
            ("null header key", |b| {
                b.put_i8(0);
                put_varlong(b, 0);
                put_varint(b, 0);
                put_varint(b, -1);
                put_varint(b, -1);
                put_varint(b, 1);
                put_varint(b, -1);
                put_varint(b, -1);
            }),
            ("huge header count", |b| {
                b.put_i8(0);
                put_varlong(b, 0);
                put_varint(b, 0);
                put_varint(b, -1);
                put_varint(b, -1);
                put_varint(b, i32::MAX);
                put_varint(b, 0);
                put_varint(b, -1);
            }),
            ("key runs past record", |b| {
                b.put_i8(0);
                put_varlong(b, 0);
                put_varint(b, 0);
                put_varint(b, 10);
                b.put_slice(b"abc");
            }),
            ("trailing byte in record", |b| {
                simple_record_body(b, 0);
                b.put_u8(0);
            }),
            ("offset delta 1 for record 0", |b| simple_record_body(b, 1)),
            ("offset delta -1 for record 0", |b| {
                simple_record_body(b, -1)
            }),
            ("empty body", |_| {}),
            ("only attributes", |b| b.put_i8(0)),
            ("timestamp varlong overflow", |b| {
                b.put_i8(0);
                b.put_slice(&[0xff; 9]);
                b.put_u8(0x02);
                put_varint(b, 0);
                put_varint(b, -1);
                put_varint(b, -1);
                put_varint(b, 0);
            }),
        ];
        for (name, build) in cases {
            let rec = raw_record(build);
            let b = raw_batch(&rec, 1);
            let err = split_and_validate(&b, MAX).unwrap_err();
            assert!(
                matches!(err, BatchError::InvalidRecord(_)),
                "{name}: {err:?}"
            );
            // Structure-only checks accept it: the CRC is right.
            assert!(check_stored_batch(&b).is_ok(), "{name}");
        }
        // The well-formed variant of the same record is accepted.
        let ok = raw_batch(&raw_record(|b| simple_record_body(b, 0)), 1);
        split_and_validate(&ok, MAX).unwrap();
        // Record 1 claiming offset delta 2.
        let mut area = raw_record(|b| simple_record_body(b, 0));
        area.put_slice(&raw_record(|b| simple_record_body(b, 2)));
        let msg = expect_invalid_record(&raw_batch(&area, 2));
        assert!(msg.starts_with("record 1:"), "{msg}");
        // Empty records area with recordsCount 1.
        expect_invalid_record(&raw_batch(&[], 1));
    }

    #[test]
    fn bad_batch_length_is_rejected() {
        let good = sample();
        for len in [48, 1, 0, -1, -12, i32::MIN] {
            let mut b = good.clone();
            set_i32(&mut b, BATCH_LENGTH_POS, len);
            let err = split_and_validate(&b, MAX).unwrap_err();
            assert_eq!(err, BatchError::InvalidLength, "length {len}");
            assert_eq!(err.kafka_code(), 2);
            assert_eq!(check_stored_batch(&b), Err(BatchError::InvalidLength));
            assert_eq!(scan_batches(&b).1, Some(BatchError::InvalidLength));
            assert_eq!(
                try_stamp(&mut b, 1, 1, None),
                Err(BatchError::InvalidLength)
            );
        }
        // Longer than the buffer.
        for len in [good.len() as i32 - 11, i32::MAX] {
            let mut b = good.clone();
            set_i32(&mut b, BATCH_LENGTH_POS, len);
            assert_eq!(split_and_validate(&b, MAX), Err(BatchError::Truncated));
            assert_eq!(split_and_validate(&b, 10), Err(BatchError::Truncated));
        }
        // A header-only batch (batchLength 49) passes the frame checks but has no records.
        let empty = build_batch(&[], 0);
        assert_eq!(empty.len(), BATCH_HEADER_BYTES);
        assert!(check_stored_batch(&empty).is_ok());
        assert_eq!(
            split_and_validate(&empty, MAX),
            Err(BatchError::InvalidRecordCount)
        );
    }

    #[test]
    fn too_large_is_rejected() {
        let b = sample();
        let err = split_and_validate(&b, b.len() - 1).unwrap_err();
        assert_eq!(
            err,
            BatchError::TooLarge {
                size: b.len(),
                max: b.len() - 1
            }
        );
        assert_eq!(err.kafka_code(), 10);
        assert!(split_and_validate(&b, b.len()).is_ok());
        // The size check comes before the CRC check.
        let mut corrupt = b.clone();
        corrupt[40] ^= 0xff;
        assert!(matches!(
            split_and_validate(&corrupt, 10),
            Err(BatchError::TooLarge { .. })
        ));
    }

    #[test]
    fn header_flags_are_checked() {
        let good = sample();
        let with = |f: &dyn Fn(&mut BytesMut)| {
            let mut b = good.clone();
            f(&mut b);
            fix_crc(&mut b).unwrap();
            b
        };

        let b = with(&|b| set_i16(b, ATTRIBUTES_POS, ATTR_CONTROL));
        let err = split_and_validate(&b, MAX).unwrap_err();
        assert_eq!(err, BatchError::ControlBatchFromClient);
        assert_eq!(err.kafka_code(), 87);
        assert!(check_stored_batch(&b).unwrap().is_control());

        for codec in 5..=7u8 {
            let b = with(&|b| set_i16(b, ATTRIBUTES_POS, i16::from(codec)));
            let err = split_and_validate(&b, MAX).unwrap_err();
            assert_eq!(err, BatchError::UnknownCompression(codec));
            assert_eq!(err.kafka_code(), 76);
        }

        let b = with(&|b| set_i16(b, ATTRIBUTES_POS, ATTR_LOG_APPEND_TIME));
        let err = split_and_validate(&b, MAX).unwrap_err();
        assert_eq!(err, BatchError::LogAppendTimeFromClient);
        assert_eq!(err.kafka_code(), 32);

        let b = with(&|b| set_i64(b, PRODUCER_ID_POS, 9));
        let err = split_and_validate(&b, MAX).unwrap_err();
        assert_eq!(
            err,
            BatchError::InvalidSequence {
                producer_id: 9,
                base_sequence: -1
            }
        );
        assert_eq!(err.kafka_code(), 87);
        let b = with(&|b| {
            set_i64(b, PRODUCER_ID_POS, 9);
            set_i32(b, BASE_SEQUENCE_POS, 0);
        });
        assert!(split_and_validate(&b, MAX).unwrap()[0]
            .header
            .has_producer_id());

        // baseOffset is outside the CRC, so no fix-up is needed.
        let mut b = good.clone();
        set_i64(&mut b, BASE_OFFSET_POS, 17);
        let err = split_and_validate(&b, MAX).unwrap_err();
        assert_eq!(err, BatchError::NonZeroBaseOffset(17));
        assert_eq!(err.kafka_code(), 87);
        assert!(check_stored_batch(&b).is_ok());

        // Transactional and delete-horizon bits are fine from a client.
        let b = with(&|b| set_i16(b, ATTRIBUTES_POS, ATTR_TRANSACTIONAL | ATTR_DELETE_HORIZON));
        let h = split_and_validate(&b, MAX).unwrap()[0].header;
        assert!(h.is_transactional() && h.has_delete_horizon());

        // A compressed batch's records area is not walked.
        let b = with(&|b| {
            set_i16(b, ATTRIBUTES_POS, 1);
            b[BATCH_HEADER_BYTES] = 0x7f;
        });
        assert_eq!(
            split_and_validate(&b, MAX).unwrap()[0].header.compression(),
            1
        );
    }

    #[test]
    fn unsupported_magic() {
        for magic in [0i8, 1, 3, -1] {
            let mut b = sample();
            b[MAGIC_POS] = magic as u8;
            let err = split_and_validate(&b, MAX).unwrap_err();
            assert_eq!(err, BatchError::UnsupportedMagic(magic));
            assert_eq!(err.kafka_code(), 43);
        }
        // A legacy v0 message, shorter than a v2 header, is still reported by its magic.
        let mut legacy = vec![0u8; 34];
        legacy[8..12].copy_from_slice(&22i32.to_be_bytes());
        legacy[MAGIC_POS] = 0;
        assert_eq!(
            split_and_validate(&legacy, MAX),
            Err(BatchError::UnsupportedMagic(0))
        );
    }

    #[test]
    fn two_batches_split_into_two_spans() {
        let a = sample();
        let b = sample_with_headers();
        let mut buf = a.clone();
        buf.put_slice(&b);
        let spans = split_and_validate(&buf, MAX).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].start, spans[0].end), (0, a.len()));
        assert_eq!((spans[1].start, spans[1].end), (a.len(), a.len() + b.len()));
        assert_eq!(spans[1].bytes(&buf), Some(&b[..]));
        assert_eq!(spans[0].header.records_count, 4);
        assert_eq!(spans[1].header.records_count, 3);
        // The size limit applies per batch.
        assert!(split_and_validate(&buf, a.len().max(b.len())).is_ok());
        // An error in the second batch fails the whole input.
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            split_and_validate(&bad, MAX),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let good = sample();
        for garbage in [&[0u8][..], &[0xab; 5], &[0; 16], &[0; 17], &[0xff; 100]] {
            let mut b = good.clone();
            b.put_slice(garbage);
            assert!(
                split_and_validate(&b, MAX).is_err(),
                "{} garbage bytes",
                garbage.len()
            );
        }
        let mut b = good.clone();
        b.put_slice(&good[..good.len() - 1]);
        assert_eq!(split_and_validate(&b, MAX), Err(BatchError::Truncated));
    }

    #[test]
    fn stamp_sets_offset_and_epoch() {
        let original = sample();
        let mut b = original.clone();
        stamp(&mut b, 1000, 7, None);
        let h = check_stored_batch(&b).unwrap();
        assert_eq!(h.base_offset, 1000);
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(h.last_offset(), 1003);
        assert_eq!(h.crc, BatchHeader::parse(&original).unwrap().crc);
        assert_eq!(&b[ATTRIBUTES_POS..], &original[ATTRIBUTES_POS..]);
        assert!(!h.is_log_append_time());
        let set = RecordBatchDecoder::decode(&mut b.clone().freeze()).unwrap();
        let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1000, 1001, 1002, 1003]);
        assert!(set.records.iter().all(|r| r.partition_leader_epoch == 7));
    }

    #[test]
    fn stamp_with_log_append_time() {
        let original = sample();
        let mut b = original.clone();
        stamp(&mut b, 50, 3, Some(1_800_000_000_000));
        let h = check_stored_batch(&b).unwrap();
        assert_eq!(h.base_offset, 50);
        assert_eq!(h.partition_leader_epoch, 3);
        assert!(h.is_log_append_time());
        assert_eq!(h.attributes & ATTR_LOG_APPEND_TIME, 1 << 3);
        assert_eq!(h.max_timestamp, 1_800_000_000_000);
        assert_eq!(h.base_timestamp, 1_700_000_000_000);
        assert_ne!(h.crc, BatchHeader::parse(&original).unwrap().crc);
        assert_eq!(&b[BATCH_HEADER_BYTES..], &original[BATCH_HEADER_BYTES..]);
        let set = RecordBatchDecoder::decode(&mut b.clone().freeze()).unwrap();
        assert!(set
            .records
            .iter()
            .all(|r| r.timestamp_type == TimestampType::LogAppend));

        // Re-stamping with the same time leaves the CRC as is; a new time changes it again.
        let crc = h.crc;
        stamp(&mut b, 60, 4, Some(1_800_000_000_000));
        assert_eq!(check_stored_batch(&b).unwrap().crc, crc);
        stamp(&mut b, 60, 4, Some(1_900_000_000_000));
        let h = check_stored_batch(&b).unwrap();
        assert_eq!(h.max_timestamp, 1_900_000_000_000);
        assert_ne!(h.crc, crc);

        // Only the leading batch is touched; bytes after it are left alone.
        let mut two = original.clone();
        two.put_slice(&original);
        stamp(&mut two, 5, 1, Some(9));
        assert_eq!(&two[original.len()..], &original[..]);
        assert!(check_stored_batch(&two).unwrap().is_log_append_time());
    }

    #[test]
    fn try_stamp_rejects_short_input() {
        let b = sample();
        let mut short = b[..b.len() - 1].to_vec();
        assert_eq!(
            try_stamp(&mut short, 1, 1, Some(1)),
            Err(BatchError::Truncated)
        );
        assert_eq!(&short[..], &b[..b.len() - 1]);
        let mut tiny = vec![0u8; 10];
        assert_eq!(try_stamp(&mut tiny, 1, 1, None), Err(BatchError::Truncated));
        assert_eq!(fix_crc(&mut tiny), Err(BatchError::Truncated));
    }

    #[test]
    fn scan_stops_at_zero_fill() {
        let a = sample();
        let b = sample_with_headers();
        let mut buf = a.clone();
        buf.put_slice(&b);
        let (spans, why) = scan_batches(&buf);
        assert_eq!(spans.len(), 2);
        assert_eq!(why, None);

        buf.put_bytes(0, 4096);
        let (spans, why) = scan_batches(&buf);
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].start, spans[0].end), (0, a.len()));
        assert_eq!((spans[1].start, spans[1].end), (a.len(), a.len() + b.len()));
        assert_eq!(why, Some(BatchError::UnsupportedMagic(0)));

        // A short zero tail, and a zeroed tail where only the magic survives, stop too.
        let mut short = a.clone();
        short.put_bytes(0, 10);
        assert_eq!(scan_batches(&short).1, Some(BatchError::Truncated));
        let mut magic_only = a.clone();
        magic_only.put_bytes(0, 100);
        magic_only[a.len() + MAGIC_POS] = 2;
        assert_eq!(scan_batches(&magic_only).1, Some(BatchError::InvalidLength));

        assert_eq!(scan_batches(&[]).0.len(), 0);
        assert_eq!(scan_batches(&[]).1, None);
    }

    #[test]
    fn scan_stops_at_truncated_batch() {
        let a = sample();
        let (spans, why) = scan_batches(&a[..a.len() - 1]);
        assert!(spans.is_empty());
        assert_eq!(why, Some(BatchError::Truncated));

        // A torn second batch keeps the first.
        let mut buf = a.clone();
        buf.put_slice(&a[..a.len() - 1]);
        let (spans, why) = scan_batches(&buf);
        assert_eq!(spans.len(), 1);
        assert_eq!(why, Some(BatchError::Truncated));

        // A corrupt second batch keeps the first, too.
        let mut buf = a.clone();
        buf.put_slice(&a);
        let last = buf.len() - 1;
        buf[last] ^= 0x10;
        let (spans, why) = scan_batches(&buf);
        assert_eq!(spans.len(), 1);
        assert!(matches!(why, Some(BatchError::CrcMismatch { .. })));

        // Stamped batches (non-zero base offsets, LogAppendTime) scan fine.
        let mut s = a.clone();
        stamp(&mut s, 123, 9, Some(5));
        let (spans, why) = scan_batches(&s);
        assert_eq!((spans.len(), why), (1, None));
        assert_eq!(spans[0].header.base_offset, 123);
    }

    #[test]
    fn varint_round_trips() {
        let ints = [
            0,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            -8192,
            8192,
            i32::MAX,
            i32::MIN,
            300,
            -300,
        ];
        for v in ints {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_size(v), "{v}");
            assert_eq!(read_varint(&b), Some((v, b.len())), "{v}");
            assert_eq!(read_varint(&b[..b.len() - 1]), None);
            b.put_u8(0xee); // trailing bytes are not consumed
            assert_eq!(read_varint(&b), Some((v, b.len() - 1)));
        }
        let longs = [
            0,
            1,
            -1,
            1 << 40,
            -(1 << 40),
            i64::MAX,
            i64::MIN,
            1_700_000_000_000,
        ];
        for v in longs {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varlong_size(v), "{v}");
            assert_eq!(read_varlong(&b), Some((v, b.len())), "{v}");
            assert_eq!(read_varlong(&b[..b.len() - 1]), None);
        }
        assert_eq!(varint_size(i32::MIN), 5);
        assert_eq!(varlong_size(i64::MIN), 10);
        // Kafka's encoding of small values (zigzag): 0→0, -1→1, 1→2.
        assert_eq!(read_varint(&[0x00]), Some((0, 1)));
        assert_eq!(read_varint(&[0x01]), Some((-1, 1)));
        assert_eq!(read_varint(&[0x02]), Some((1, 1)));
        assert_eq!(read_varint(&[0x80, 0x01]), Some((64, 2)));
        // Too long or overflowing.
        assert_eq!(read_varint(&[0x80; 6]), None);
        assert_eq!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0x10]), None);
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Some((i32::MIN, 5))
        );
        assert_eq!(read_varlong(&[0x80; 11]), None);
        let mut max = [0xffu8; 10];
        max[9] = 0x01;
        assert_eq!(read_varlong(&max), Some((i64::MIN, 10)));
        max[9] = 0x02;
        assert_eq!(read_varlong(&max), None);
        assert_eq!(read_varint(&[]), None);
        assert_eq!(read_varlong(&[]), None);
    }

    #[test]
    fn error_codes() {
        assert_eq!(BatchError::Empty.kafka_code(), 87);
        assert_eq!(BatchError::Truncated.kafka_code(), 2);
        assert_eq!(BatchError::InvalidLength.kafka_code(), 2);
        assert_eq!(
            BatchError::CrcMismatch {
                stored: 1,
                computed: 2
            }
            .kafka_code(),
            2
        );
        assert_eq!(BatchError::TooLarge { size: 2, max: 1 }.kafka_code(), 10);
        assert_eq!(BatchError::UnsupportedMagic(1).kafka_code(), 43);
        assert_eq!(BatchError::UnknownCompression(5).kafka_code(), 76);
        assert_eq!(BatchError::InvalidRecordCount.kafka_code(), 87);
        assert_eq!(BatchError::InvalidRecord("x".into()).kafka_code(), 87);
        assert_eq!(BatchError::ControlBatchFromClient.kafka_code(), 87);
        assert_eq!(BatchError::NonZeroBaseOffset(1).kafka_code(), 87);
        assert_eq!(BatchError::LogAppendTimeFromClient.kafka_code(), 32);
        let msg = BatchError::CrcMismatch {
            stored: 0xdead,
            computed: 0xbeef,
        }
        .to_string();
        assert!(
            msg.contains("0x0000dead") && msg.contains("0x0000beef"),
            "{msg}"
        );
    }

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random flips, truncations, insertions and field overwrites of valid batches never panic,
    /// and whatever is accepted is internally consistent. Half the mutants get their CRC fixed
    /// so that the record walker sees them, not just the CRC check.
    #[test]
    fn fuzz_never_panics() {
        let mut two = sample();
        two.put_slice(&sample_with_headers());
        let seeds = [
            sample(),
            sample_with_headers(),
            two,
            build_batch(&[(None, None)], 0),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for iter in 0..40_000 {
            let mut b = seeds[iter % seeds.len()].to_vec();
            for _ in 0..=rng.below(4) {
                match rng.below(6) {
                    0 if !b.is_empty() => {
                        let at = rng.below(b.len());
                        b[at] ^= 1 << rng.below(8);
                    }
                    1 if !b.is_empty() => {
                        let at = rng.below(b.len());
                        b[at] = rng.next() as u8;
                    }
                    2 => {
                        let len = rng.below(b.len() + 1);
                        b.truncate(len);
                    }
                    3 => {
                        let at = rng.below(b.len() + 1);
                        b.insert(at, rng.next() as u8);
                    }
                    4 if b.len() >= 4 => {
                        // Overwrite an aligned-ish 4-byte window (lengths, counts) with an
                        // interesting value.
                        let at = rng.below(b.len() - 3);
                        let v =
                            [0, -1, 1, 48, 49, i32::MAX, i32::MIN, rng.next() as i32][rng.below(8)];
                        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
                    }
                    _ if b.len() > BATCH_HEADER_BYTES => {
                        // Overwrite a records-area byte with a varint-significant value.
                        let at = BATCH_HEADER_BYTES + rng.below(b.len() - BATCH_HEADER_BYTES);
                        b[at] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)];
                    }
                    _ => {}
                }
            }
            if rng.below(2) == 0 {
                let _ = fix_crc(&mut b);
            }
            let max = if rng.below(8) == 0 {
                rng.below(200)
            } else {
                MAX
            };
            if let Ok(spans) = split_and_validate(&b, max) {
                accepted += 1;
                let mut expected_start = 0;
                for s in &spans {
                    assert_eq!(s.start, expected_start);
                    assert_eq!(s.end - s.start, s.header.total_bytes());
                    assert!(s.header.total_bytes() <= max);
                    assert!(check_stored_batch(&b[s.start..s.end]).is_ok());
                    expected_start = s.end;
                }
                assert_eq!(expected_start, b.len());
                let mut copy = b.clone();
                stamp(&mut copy[spans[0].start..spans[0].end], 9, 9, Some(9));
                assert!(check_stored_batch(&copy).is_ok());
            }
            let _ = check_stored_batch(&b);
            let (spans, why) = scan_batches(&b);
            assert!(spans.last().map_or(0, |s| s.end) <= b.len());
            assert_eq!(why.is_none(), spans.last().map_or(0, |s| s.end) == b.len());
            let _ = BatchHeader::parse(&b);
            let _ = try_stamp(&mut b, 1, 1, Some(1));
        }
        // Sanity: the mutator leaves some inputs valid (e.g. byte rewritten to itself).
        assert!(accepted > 0);
    }
}
