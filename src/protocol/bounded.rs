//! Decoding request bodies with kafka-protocol without letting a lying length allocate.
//!
//! kafka-protocol 0.18.0 decodes an array by reading its element count and calling
//! `Vec::with_capacity(count)` before it decodes a single element (`types::Array` with an
//! `i32` count, `types::CompactArray` with an unsigned varint; `Bytes`/`CompactBytes` into
//! a `Vec<u8>` do the same with `vec![0; len]`). So a 9-byte Metadata v0 body declaring
//! 2^31-1 topics asks the allocator for ~150 GB, which it cannot give: `handle_alloc_error`
//! aborts the whole broker, every core. Open upstream as kafka-protocol-rs PRs #152/#161/#200.
//!
//! [`decode`] wraps the body in [`BoundedBuf`], which sees every scalar read the decoder
//! makes and, without knowing the schema, stops the values that could be a lying length:
//!
//! * an unsigned varint (kafka-protocol reads those, and only those and booleans, with
//!   `try_get_u8`) whose value is above [`CLAMP_FLOOR`] and above the bytes left after it
//!   fails the read. In request schemas a varint is a compact length, a tagged-field count,
//!   a tag or a tag's size; as any of these but a tag such a value cannot be honest, and
//!   kafka-protocol knows no tag above 1. The only bodies refused that kafka-protocol would
//!   take are ones with a tag number above 65536 and the rest of the body, or with a
//!   boolean byte of 0x80 or more followed by bytes that read as such a varint.
//! * an `i32` above both `CLAMP_FLOOR` and the bytes left after it reads as
//!   `max(left + 1, CLAMP_FLOOR + 1)`. Used as a length it still exceeds what is left, so the
//!   decode fails as it would have (every array element takes at least one byte on the
//!   wire), having preallocated at most that many elements. If instead the decode succeeds,
//!   every clamped `i32` was a plain number (a timeout, a fetch session id) that steered
//!   nothing, so the body is decoded again letting exactly those `i32`s through, which takes
//!   the same path and yields the real values.
//!
//! So whenever [`decode`] returns a message it is exactly what `M::decode` returns, and
//! whatever it allocates at once is bounded by the body length or `CLAMP_FLOOR` elements.
//! Well-formed requests are decoded once unless they carry a large plain `i32`.

use bytes::{Buf, Bytes};
use kafka_protocol::protocol::buf::ByteBuf;
use kafka_protocol::protocol::Decodable;

/// Counts and lengths up to this are never clamped: preallocating this many elements of any
/// request type costs a few MiB at most.
pub const CLAMP_FLOOR: usize = 1 << 16;

/// Decodes `M` from `body` (see the module docs): the same result as `M::decode` on the
/// body for every input where that returns, an error for inputs where it would have
/// allocated from a length the body cannot hold.
pub fn decode<M: Decodable>(body: &Bytes, version: i16) -> anyhow::Result<M> {
    let mut first = BoundedBuf::new(body.clone(), &[]);
    let m = M::decode(&mut first, version)?;
    if first.clamped.is_empty() {
        return Ok(m);
    }
    drop(m);
    let allowed = std::mem::take(&mut first.clamped);
    M::decode(&mut BoundedBuf::new(body.clone(), &allowed), version)
}

/// A [`ByteBuf`] over a request body that clamps possible lying lengths (module docs).
#[derive(Debug)]
pub struct BoundedBuf<'a> {
    inner: Bytes,
    total: usize,
    /// Positions of `i32`s to pass through unclamped (sorted).
    allowed: &'a [usize],
    /// Positions of the `i32`s clamped so far (increasing).
    clamped: Vec<usize>,
}

impl<'a> BoundedBuf<'a> {
    pub fn new(body: Bytes, allowed: &'a [usize]) -> Self {
        BoundedBuf { total: body.len(), inner: body, allowed, clamped: Vec::new() }
    }

    fn pos(&self) -> usize {
        self.total - self.inner.remaining()
    }

    /// Positions of the `i32`s clamped so far.
    pub fn clamped(&self) -> &[usize] {
        &self.clamped
    }
}

/// Reads an unsigned varint the way kafka-protocol does (at most 5 bytes, bits past the 32nd
/// dropped): `(value, length)`, or `None` if `buf` ends first.
fn peek_uvarint(buf: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for i in 0..5 {
        let b = u32::from(*buf.get(i)?);
        value |= (b & 0x7f).wrapping_shl(7 * i as u32);
        if b < 0x80 {
            return Some((value, i + 1));
        }
    }
    Some((value, 5))
}

impl Buf for BoundedBuf<'_> {
    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.inner.chunk()
    }

    fn advance(&mut self, cnt: usize) {
        self.inner.advance(cnt)
    }

    fn try_get_u8(&mut self) -> Result<u8, bytes::TryGetError> {
        let rest = self.inner.chunk();
        let first = *rest.first().ok_or(bytes::TryGetError { requested: 1, available: 0 })?;
        if first >= 0x80 {
            if let Some((v, len)) = peek_uvarint(rest) {
                let (v, left) = (v as usize, rest.len() - len);
                if v > CLAMP_FLOOR && v > left + 1 {
                    return Err(bytes::TryGetError { requested: v, available: left });
                }
            }
        }
        self.inner.advance(1);
        Ok(first)
    }

    fn try_get_i32(&mut self) -> Result<i32, bytes::TryGetError> {
        let p = self.pos();
        let v = self.inner.try_get_i32()?;
        let left = self.inner.remaining();
        if v > 0 && v as usize > CLAMP_FLOOR && v as usize > left && self.allowed.binary_search(&p).is_err() {
            self.clamped.push(p);
            // <= v, so it fits in an i32.
            return Ok((left + 1).max(CLAMP_FLOOR + 1) as i32);
        }
        Ok(v)
    }
}

impl ByteBuf for BoundedBuf<'_> {
    fn peek_bytes(&mut self, r: std::ops::Range<usize>) -> Bytes {
        self.inner.slice(r)
    }

    fn get_bytes(&mut self, size: usize) -> Bytes {
        self.inner.split_to(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, ProduceRequest};

    #[test]
    fn lying_array_counts_fail_without_allocating() {
        // Metadata v0: topics = i32::MAX elements, 1 byte of them.
        let body = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0]);
        assert!(decode::<MetadataRequest>(&body, 0).is_err());
        // Metadata v9: a compact array of 2^32 - 2 topics.
        let body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0]);
        assert!(decode::<MetadataRequest>(&body, 9).is_err());
    }

    #[test]
    fn long_varints_fail_only_when_they_exceed_the_body() {
        let raw = [0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2];
        let mut b = BoundedBuf::new(Bytes::copy_from_slice(&raw), &[]);
        assert!(b.try_get_u8().is_err());
        assert_eq!(b.remaining(), raw.len());
        // 2^16 + 1 with 2^16 bytes after it passes.
        let mut raw = vec![0x81, 0x80, 0x04];
        raw.resize(3 + (1 << 16), 0);
        let mut b = BoundedBuf::new(Bytes::from(raw), &[]);
        assert_eq!([b.try_get_u8().unwrap(), b.try_get_u8().unwrap(), b.try_get_u8().unwrap()], [0x81, 0x80, 0x04]);
    }

    #[test]
    fn large_plain_i32s_keep_their_values() {
        // Produce v3 with a huge timeout and nothing after it but an empty topic array.
        let mut body = Vec::new();
        body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
        body.extend_from_slice(&1i16.to_be_bytes()); // acks
        body.extend_from_slice(&i32::MAX.to_be_bytes()); // timeout
        body.extend_from_slice(&0i32.to_be_bytes()); // no topics
        let r = decode::<ProduceRequest>(&Bytes::from(body), 3).unwrap();
        assert_eq!(r.timeout_ms, i32::MAX);
    }
}
