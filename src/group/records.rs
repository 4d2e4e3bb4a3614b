//! The records of `__consumer_offsets`, in Kafka's own formats, so that the
//! topic reads the same as Kafka's with its tools:
//!
//! - offset commit: key v1 `(group, topic, partition)`, value v3
//!   `(offset, leader_epoch, metadata, commit_timestamp)`;
//! - group metadata: key v2 `(group)`, value v3 (protocol type, generation,
//!   protocol, leader, state timestamp, members with their subscription and
//!   assignment bytes).
//!
//! A record with a null value (tombstone) deletes its key. Decoding takes
//! bytes read back from disk: every length is checked, nothing panics, and an
//! unknown version is an error the loader skips.

use bytes::{Buf, BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Offset { group: String, topic: String, partition: i32 },
    Group { group: String },
}

impl Key {
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group } => group,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bad __consumer_offsets record: {0}")]
pub struct RecordError(pub &'static str);

fn put_str(out: &mut BytesMut, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    out.put_i16(len as i16);
    out.put_slice(&s.as_bytes()[..len]);
}

fn put_nullable_str(out: &mut BytesMut, s: Option<&str>) {
    match s {
        None => out.put_i16(-1),
        Some(s) => put_str(out, s),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

pub fn encode_key(key: &Key) -> Bytes {
    let mut out = BytesMut::new();
    match key {
        Key::Offset { group, topic, partition } => {
            out.put_i16(1);
            put_str(&mut out, group);
            put_str(&mut out, topic);
            out.put_i32(*partition);
        }
        Key::Group { group } => {
            out.put_i16(2);
            put_str(&mut out, group);
        }
    }
    out.freeze()
}

pub fn encode_offset(v: &OffsetValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(3);
    out.put_i64(v.offset);
    out.put_i32(v.leader_epoch);
    put_str(&mut out, &v.metadata);
    out.put_i64(v.commit_timestamp);
    out.freeze()
}

pub fn encode_group(v: &GroupValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(3);
    put_str(&mut out, &v.protocol_type);
    out.put_i32(v.generation);
    put_nullable_str(&mut out, v.protocol.as_deref());
    put_nullable_str(&mut out, v.leader.as_deref());
    out.put_i64(v.state_timestamp);
    out.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut out, &m.member_id);
        put_nullable_str(&mut out, m.instance_id.as_deref());
        put_str(&mut out, &m.client_id);
        put_str(&mut out, &m.client_host);
        out.put_i32(m.rebalance_timeout_ms);
        out.put_i32(m.session_timeout_ms);
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out.freeze()
}

/// A bounds-checked reader over untrusted bytes.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), RecordError> {
        if self.0.remaining() < n {
            Err(RecordError("truncated"))
        } else {
            Ok(())
        }
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    fn nullable_str(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        self.need(len as usize)?;
        let b = self.0.split_to(len as usize);
        String::from_utf8(b.to_vec()).map(Some).map_err(|_| RecordError("string is not UTF-8"))
    }
    fn str(&mut self) -> Result<String, RecordError> {
        self.nullable_str()?.ok_or(RecordError("null string"))
    }
    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        self.need(len as usize)?;
        Ok(self.0.split_to(len as usize))
    }
}

pub fn decode_key(b: Bytes) -> Result<Key, RecordError> {
    let mut r = Reader(b);
    match r.i16()? {
        0 | 1 => Ok(Key::Offset { group: r.str()?, topic: r.str()?, partition: r.i32()? }),
        2 => Ok(Key::Group { group: r.str()? }),
        _ => Err(RecordError("unknown key version")),
    }
}

pub fn decode_offset(b: Bytes) -> Result<OffsetValue, RecordError> {
    let mut r = Reader(b);
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp = r.i64()?;
    if version == 1 {
        r.i64()?; // expire timestamp
    }
    if !(0..=4).contains(&version) {
        return Err(RecordError("unknown offset value version"));
    }
    Ok(OffsetValue { offset, leader_epoch, metadata, commit_timestamp })
}

pub fn decode_group(b: Bytes) -> Result<GroupValue, RecordError> {
    let mut r = Reader(b);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(RecordError("unknown group value version"));
    }
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.nullable_str()?;
    let leader = r.nullable_str()?;
    let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    // Every member takes at least 20 bytes: a lying count cannot make us allocate.
    if count < 0 || count as usize > r.0.remaining() / 20 + 1 {
        return Err(RecordError("bad member count"));
    }
    let mut members = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let member_id = r.str()?;
        let instance_id = if version >= 3 { r.nullable_str()? } else { None };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { 0 };
        let session_timeout_ms = r.i32()?;
        let rebalance_timeout_ms = if version >= 1 { rebalance_timeout_ms } else { session_timeout_ms };
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(MemberValue {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupValue { protocol_type, generation, protocol, leader, state_timestamp, members })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let k = Key::Offset { group: "g".into(), topic: "t".into(), partition: 7 };
        assert_eq!(decode_key(encode_key(&k)).unwrap(), k);
        let k = Key::Group { group: "grp".into() };
        assert_eq!(decode_key(encode_key(&k)).unwrap(), k);
        let v = OffsetValue { offset: 42, leader_epoch: 3, metadata: "m".into(), commit_timestamp: 99 };
        assert_eq!(decode_offset(encode_offset(&v)).unwrap(), v);
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("a".into()),
            state_timestamp: 1,
            members: vec![MemberValue {
                member_id: "a".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(decode_group(encode_group(&g)).unwrap(), g);
    }

    #[test]
    fn kafka_offset_key_bytes() {
        // Kafka's OffsetCommitKey v1 for ("g", "t", 1): version, two strings, partition.
        let b = encode_key(&Key::Offset { group: "g".into(), topic: "t".into(), partition: 1 });
        assert_eq!(&b[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = crate::util::SplitMix64::new(7);
        let good = encode_group(&GroupValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: None,
            leader: None,
            state_timestamp: 0,
            members: vec![],
        });
        for len in 0..200usize {
            let mut v: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let _ = decode_key(Bytes::from(v.clone()));
            let _ = decode_offset(Bytes::from(v.clone()));
            let _ = decode_group(Bytes::from(v.clone()));
            v.splice(0..0, good.iter().copied());
            v[good.len() - 4..good.len()].copy_from_slice(&i32::MAX.to_be_bytes());
            assert!(decode_group(Bytes::from(v)).is_err());
        }
    }
}
