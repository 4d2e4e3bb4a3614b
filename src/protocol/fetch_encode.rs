//! Fetch response encoding without copying record batches.
//!
//! kafka-protocol's encoder copies every partition's records into the
//! response buffer. This encoder writes the same bytes (a unit test checks
//! equality with kafka-protocol for every version served) as a list of
//! chunks: small metadata pieces coalesced, and record batches of
//! [`ZERO_COPY_MIN_BYTES`] or more passed through as the `Bytes` the log
//! handed out. Only the fields the broker sets are supported (no tagged
//! fields, no preferred read replica).

use bytes::{BufMut, Bytes, BytesMut};

/// Records at least this long go out as their own chunk instead of being copied.
pub const ZERO_COPY_MIN_BYTES: usize = 16 * 1024;

/// Oldest and newest Fetch versions this encoder writes.
pub const VERSIONS: (i16, i16) = (4, 12);

#[derive(Debug, Clone)]
pub struct PartitionOut {
    pub partition: i32,
    pub error: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Aborted transactions (producer id, first offset); `None` writes a null array
    /// (read_uncommitted, as Kafka does).
    pub aborted: Option<Vec<(i64, i64)>>,
    pub records: Bytes,
}

#[derive(Debug, Clone)]
pub struct TopicOut {
    pub name: std::sync::Arc<str>,
    pub partitions: Vec<PartitionOut>,
}

struct Chunks {
    out: Vec<Bytes>,
    cur: BytesMut,
}

impl Chunks {
    fn put_records(&mut self, r: &Bytes) {
        if r.len() >= ZERO_COPY_MIN_BYTES {
            let head = std::mem::take(&mut self.cur).freeze();
            self.out.push(head);
            self.out.push(r.clone());
        } else {
            self.cur.extend_from_slice(r);
        }
    }
}

fn put_uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_len(b: &mut BytesMut, flexible: bool, n: usize) {
    if flexible {
        put_uvarint(b, n as u64 + 1);
    } else {
        b.put_i32(n as i32);
    }
}

/// Encodes a whole response frame (size prefix, header, body) as chunks whose
/// concatenation is the frame. `version` must lie in [`VERSIONS`].
pub fn encode(version: i16, correlation_id: i32, error_code: i16, session_id: i32, topics: &[TopicOut]) -> Vec<Bytes> {
    assert!((VERSIONS.0..=VERSIONS.1).contains(&version), "Fetch v{version} is not encoded here");
    let flexible = version >= 12;
    let mut c = Chunks { out: Vec::new(), cur: BytesMut::with_capacity(256) };
    c.cur.put_i32(0); // size, patched below
    c.cur.put_i32(correlation_id);
    if flexible {
        put_uvarint(&mut c.cur, 0); // response header tagged fields
    }
    c.cur.put_i32(0); // throttle_time_ms
    if version >= 7 {
        c.cur.put_i16(error_code);
        c.cur.put_i32(session_id);
    }
    put_len(&mut c.cur, flexible, topics.len());
    for t in topics {
        if flexible {
            put_uvarint(&mut c.cur, t.name.len() as u64 + 1);
        } else {
            c.cur.put_i16(t.name.len() as i16);
        }
        c.cur.extend_from_slice(t.name.as_bytes());
        put_len(&mut c.cur, flexible, t.partitions.len());
        for p in &t.partitions {
            c.cur.put_i32(p.partition);
            c.cur.put_i16(p.error);
            c.cur.put_i64(p.high_watermark);
            c.cur.put_i64(p.last_stable_offset);
            if version >= 5 {
                c.cur.put_i64(p.log_start_offset);
            }
            match &p.aborted {
                None if flexible => put_uvarint(&mut c.cur, 0),
                None => c.cur.put_i32(-1),
                Some(list) => {
                    put_len(&mut c.cur, flexible, list.len());
                    for (producer_id, first_offset) in list {
                        c.cur.put_i64(*producer_id);
                        c.cur.put_i64(*first_offset);
                        if flexible {
                            put_uvarint(&mut c.cur, 0);
                        }
                    }
                }
            }
            if version >= 11 {
                c.cur.put_i32(-1); // preferred_read_replica
            }
            put_len(&mut c.cur, flexible, p.records.len());
            c.put_records(&p.records);
            if flexible {
                put_uvarint(&mut c.cur, 0); // partition tagged fields
            }
        }
        if flexible {
            put_uvarint(&mut c.cur, 0); // topic tagged fields
        }
    }
    if flexible {
        put_uvarint(&mut c.cur, 0); // response tagged fields
    }
    let tail = c.cur.freeze();
    c.out.push(tail);
    c.out.retain(|b| !b.is_empty());
    let total: usize = c.out.iter().map(Bytes::len).sum();
    let first = c.out.first_mut().expect("the header chunk is never empty");
    let mut head = BytesMut::from(&first[..]);
    head[..4].copy_from_slice(&((total - 4) as i32).to_be_bytes());
    *first = head.freeze();
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn sample() -> Vec<TopicOut> {
        let big = Bytes::from((0..40_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        vec![
            TopicOut {
                name: "orders".into(),
                partitions: vec![
                    PartitionOut { partition: 0, error: 0, high_watermark: 10, last_stable_offset: 10, log_start_offset: 0, aborted: Some(vec![(7, 2), (9, 4)]), records: big.clone() },
                    PartitionOut { partition: 3, error: 1, high_watermark: 5, last_stable_offset: 5, log_start_offset: 2, aborted: None, records: Bytes::new() },
                    PartitionOut { partition: 7, error: 0, high_watermark: 9, last_stable_offset: 9, log_start_offset: 1, aborted: Some(vec![]), records: Bytes::from_static(b"small batch") },
                ],
            },
            TopicOut { name: "x".into(), partitions: vec![PartitionOut { partition: 1, error: 0, high_watermark: 1, last_stable_offset: 1, log_start_offset: 0, aborted: None, records: big }] },
        ]
    }

    fn with_kafka_protocol(version: i16, topics: &[TopicOut]) -> Vec<u8> {
        let responses = topics
            .iter()
            .map(|t| {
                FetchableTopicResponse::default().with_topic(TopicName(StrBytes::from_string(t.name.to_string()))).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            PartitionData::default()
                                .with_partition_index(p.partition)
                                .with_error_code(p.error)
                                .with_high_watermark(p.high_watermark)
                                .with_last_stable_offset(p.last_stable_offset)
                                .with_log_start_offset(if version >= 5 { p.log_start_offset } else { -1 })
                                .with_aborted_transactions(p.aborted.as_ref().map(|l| {
                                    l.iter()
                                        .map(|&(pid, first)| {
                                            kafka_protocol::messages::fetch_response::AbortedTransaction::default()
                                                .with_producer_id(kafka_protocol::messages::ProducerId(pid))
                                                .with_first_offset(first)
                                        })
                                        .collect()
                                }))
                                .with_records(Some(p.records.clone()))
                        })
                        .collect(),
                )
            })
            .collect();
        let body = FetchResponse::default().with_error_code(if version >= 7 { 3 } else { 0 }).with_session_id(if version >= 7 { 77 } else { 0 }).with_responses(responses);
        crate::protocol::frame::encode_response(ApiKey::Fetch, version, 42, &body).unwrap().to_vec()
    }

    #[test]
    fn same_bytes_as_kafka_protocol_for_every_version() {
        let topics = sample();
        for v in VERSIONS.0..=VERSIONS.1 {
            let mut topics_v = topics.clone();
            if v < 5 {
                for t in &mut topics_v {
                    for p in &mut t.partitions {
                        p.log_start_offset = -1;
                    }
                }
            }
            let chunks = encode(v, 42, 3, 77, &topics_v);
            let ours: Vec<u8> = chunks.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(ours, with_kafka_protocol(v, &topics_v), "Fetch v{v}");
            // The two 40 kB batches went out as their own chunks, not copied.
            assert!(chunks.iter().filter(|c| c.len() == 40_000).count() == 2, "v{v}: big records are zero-copy");
        }
    }
}
