//! Sparse offset and time indexes of one segment: pure index math, no I/O.
//!
//! The on-disk formats are Kafka's: the offset index is a sequence of 8-byte
//! entries (relative offset u32, file position u32), the time index of 12-byte
//! entries (timestamp i64, relative offset u32), both big-endian and both
//! strictly increasing. An entry is added every `index.interval.bytes` of log.

/// Sparse map from offsets to file positions within one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records that the batch starting at `relative_offset` begins at `position`.
    /// Entries that would not keep both columns strictly increasing are ignored.
    pub fn append(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(o, p)) = self.entries.last() {
            if relative_offset <= o || position <= p {
                return;
            }
        }
        self.entries.push((relative_offset, position));
    }

    /// The position of the last indexed batch starting at or before `relative_offset`
    /// (0 when there is none): a reader scans forward from there.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        let idx = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if idx == 0 {
            0
        } else {
            self.entries.get(idx - 1).map(|&(_, p)| p).unwrap_or(0)
        }
    }

    /// The last entry at or before `relative_offset` as (relative offset, position),
    /// or (0, 0) when there is none: the batch at that position starts at that offset.
    pub fn lookup_entry(&self, relative_offset: u32) -> (u32, u32) {
        let idx = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        match idx.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(&e) => e,
            None => (0, 0),
        }
    }

    /// Drops entries pointing at or beyond `position` (after a tail truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|&(_, p)| p < position);
        self.entries.truncate(keep);
    }

    /// Drops entries for offsets at or beyond `relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self.entries.partition_point(|&(o, _)| o < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn last_position(&self) -> u32 {
        self.entries.last().map(|&(_, p)| p).unwrap_or(0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Decodes an index file; `None` when it is malformed, in which case it is
    /// rebuilt: a length that is not a multiple of the entry size, entries not
    /// strictly increasing, an entry at position 0 or relative offset 0 (the first
    /// batch of a segment is never indexed: it is at position 0 with offset 0), a
    /// position past `segment_size`, or a relative offset at or beyond `offsets`
    /// (the number of offsets the segment can hold: up to the next segment's base).
    pub fn decode(bytes: &[u8], segment_size: u64, offsets: u64) -> Option<OffsetIndex> {
        if bytes.len() % 8 != 0 {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(8) {
            let o = u32::from_be_bytes(chunk[..4].try_into().ok()?);
            let p = u32::from_be_bytes(chunk[4..].try_into().ok()?);
            if let Some(&(lo, lp)) = index.entries.last() {
                if o <= lo || p <= lp {
                    return None;
                }
            }
            if o == 0 || p == 0 || p as u64 >= segment_size || o as u64 >= offsets {
                return None;
            }
            index.entries.push((o, p));
        }
        Some(index)
    }
}

/// Sparse map from timestamps to offsets within one segment. Timestamps are the
/// running maximum, so the index stays monotonic even when producers' clocks are not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records that the batch at `relative_offset` raised the segment's max timestamp to `timestamp`.
    pub fn append(&mut self, timestamp: i64, relative_offset: u32) {
        if let Some(&(t, o)) = self.entries.last() {
            if timestamp <= t || relative_offset <= o {
                return;
            }
        }
        self.entries.push((timestamp, relative_offset));
    }

    /// The relative offset from which to scan for the first record with a
    /// timestamp >= `timestamp`: that of the last entry whose timestamp is below it.
    pub fn lookup(&self, timestamp: i64) -> u32 {
        let idx = self.entries.partition_point(|&(t, _)| t < timestamp);
        if idx == 0 {
            0
        } else {
            self.entries.get(idx - 1).map(|&(_, o)| o).unwrap_or(0)
        }
    }

    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self.entries.partition_point(|&(_, o)| o < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    /// Decodes a time index file; `None` when it is malformed: a length that is not
    /// a multiple of the entry size, entries not strictly increasing, a negative
    /// timestamp (batches without timestamps are not indexed), or a relative offset
    /// at or beyond `offsets` (see [`OffsetIndex::decode`]).
    pub fn decode(bytes: &[u8], offsets: u64) -> Option<TimeIndex> {
        if bytes.len() % 12 != 0 {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(12) {
            let t = i64::from_be_bytes(chunk[..8].try_into().ok()?);
            let o = u32::from_be_bytes(chunk[8..].try_into().ok()?);
            if let Some(&(lt, lo)) = index.entries.last() {
                if t <= lt || o <= lo {
                    return None;
                }
            }
            if t < 0 || o as u64 >= offsets {
                return None;
            }
            index.entries.push((t, o));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_floor_entry() {
        let mut idx = OffsetIndex::default();
        idx.append(0, 0); // ignored: position must increase from nothing? no: first entry accepted
        idx.append(10, 4096);
        idx.append(20, 8192);
        idx.append(15, 9000); // not increasing offset: ignored
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.lookup(0), 0);
        assert_eq!(idx.lookup(9), 0);
        assert_eq!(idx.lookup(10), 4096);
        assert_eq!(idx.lookup(19), 4096);
        assert_eq!(idx.lookup(1000), 8192);
        idx.truncate_to_position(8192);
        assert_eq!(idx.lookup(1000), 4096);
        idx.truncate_to_offset(10);
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn offset_index_round_trips_and_rejects_garbage() {
        let mut idx = OffsetIndex::default();
        idx.append(3, 100);
        idx.append(7, 900);
        let bytes = idx.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 1000, 100), Some(idx.clone()));
        assert_eq!(OffsetIndex::decode(&bytes, 900, 100), None, "entry past segment end");
        assert_eq!(OffsetIndex::decode(&bytes, 1000, 7), None, "offset at or past the next segment's base");
        assert_eq!(OffsetIndex::decode(&bytes, 1000, 8), Some(idx.clone()));
        assert_eq!(OffsetIndex::decode(&bytes[..7], 1000, 100), None);
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert_eq!(OffsetIndex::decode(&swapped, 1000, 100), None);
        assert_eq!(OffsetIndex::decode(&[0u8; 8], 1000, 100), None, "a zeroed entry");
        assert_eq!(OffsetIndex::decode(&[0u8; 64], 1000, 100), None, "zeroed entries");
        assert_eq!(OffsetIndex::decode(&[0xff; 16], 1000, 100), None, "0xff garbage");
        assert_eq!(OffsetIndex::decode(&[], 1000, 100), Some(OffsetIndex::default()));
        assert_eq!(idx.lookup_entry(2), (0, 0));
        assert_eq!(idx.lookup_entry(3), (3, 100));
        assert_eq!(idx.lookup_entry(6), (3, 100));
        assert_eq!(idx.lookup_entry(70), (7, 900));
    }

    #[test]
    fn time_lookup_starts_before_first_match() {
        let mut t = TimeIndex::default();
        t.append(100, 0);
        t.append(200, 5);
        t.append(150, 6); // not increasing: ignored
        t.append(300, 9);
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(50), 0);
        assert_eq!(t.lookup(100), 0);
        assert_eq!(t.lookup(201), 5);
        assert_eq!(t.lookup(300), 5);
        assert_eq!(t.lookup(301), 9);
        assert_eq!(TimeIndex::decode(&t.encode(), 10), Some(t.clone()));
        assert_eq!(TimeIndex::decode(&t.encode(), 9), None, "offset at or past the next segment's base");
        assert_eq!(TimeIndex::decode(&t.encode()[..20], 10), None, "truncated");
        assert_eq!(TimeIndex::decode(&[0u8; 24], 10), None, "zeroed entries");
        assert_eq!(TimeIndex::decode(&[0xff; 12], 10), None, "negative timestamp");
        t.truncate_to_offset(6);
        assert_eq!(t.len(), 2);
    }
}
