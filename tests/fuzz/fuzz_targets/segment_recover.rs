//! Crash recovery of a segment from arbitrary bytes, with the real log: the input becomes the
//! only segment file of a partition directory (no clean-shutdown marker, no indexes), which
//! `PartitionLog::open` scans in a glommio executor. Odd first byte: the rest is the file as
//! is. Even: the rest builds up to 4 valid batches (offsets from 0), then its last 3 bytes damage
//! the file (truncate, flip a bit, zero a run, or append garbage). The log must open, serve only
//! CRC-valid batches with dense offsets from 0, and (built files) keep every batch wholly
//! before the damage and nothing but what was written (the uncovered leader epoch aside).
#![no_main]

use bytes::BytesMut;
use corestream::protocol::batch::{self, PARTITION_LEADER_EPOCH_POS};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static EXECUTOR: glommio::LocalExecutor = glommio::LocalExecutorBuilder::default()
        .io_memory(512 * 1024)
        .make()
        .expect("creating a glommio executor (io_uring, RLIMIT_MEMLOCK)");
}

fn masked(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    if v.len() >= PARTITION_LEADER_EPOCH_POS + 4 {
        v[PARTITION_LEADER_EPOCH_POS..PARTITION_LEADER_EPOCH_POS + 4].fill(0);
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let (file, built, first_bad) = if mode & 1 == 1 {
        (rest.to_vec(), Vec::new(), 0)
    } else {
        let Some((spec, ops)) = rest.split_last_chunk::<3>() else { return };
        let mut built: Vec<BytesMut> = Vec::new();
        let mut next = 0i64;
        for chunk in spec.chunks(24).take(4) {
            let recs: Vec<batch::KeyValue<'_>> =
                chunk.chunks(6).map(|r| (r.get(..1).filter(|k| k[0] & 1 == 1), Some(r))).collect();
            let mut b = batch::build_batch(&recs, 1_700_000_000_000);
            batch::stamp(&mut b, next, 0, None);
            next += recs.len() as i64;
            built.push(b);
        }
        let mut file: Vec<u8> = built.iter().flat_map(|b| b.iter().copied()).collect();
        let original = file.clone();
        let len = file.len();
        let [op, a, b] = *ops;
        let first_bad = if len == 0 {
            0
        } else {
            let at = (usize::from(a) << 8 | usize::from(b)) % len;
            match op % 4 {
                0 => {
                    file.truncate(at);
                    at
                }
                1 => {
                    file[at] ^= 1 << (op >> 5);
                    at
                }
                2 => {
                    let end = (at + 1 + usize::from(op >> 2)).min(len);
                    file[at..end].fill(0);
                    (at..end).find(|&i| original[i] != 0).unwrap_or(len)
                }
                _ => {
                    file.extend_from_slice(&[op, a, b, op ^ a, 2, 0, 0, 0x40]);
                    len
                }
            }
        };
        (file, built, first_bad)
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let part = dir.path().join("t-0");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join(format!("{:020}.log", 0)), &file).unwrap();
    let got = EXECUTOR.with(|ex| {
        ex.run(async move {
            let cfg = corestream::config::LogConfig::with_segment_bytes(1 << 20);
            let log = corestream::storage::log::PartitionLog::open(part, cfg).await.expect("recovery opens the log");
            let end = log.log_end_offset();
            let mut offset = log.log_start_offset();
            assert_eq!(offset, 0);
            let mut got = Vec::new();
            while offset < end {
                let r = log.read(offset, 1 << 20).await.expect("read");
                let (spans, why) = batch::scan_batches(&r.records);
                assert!(why.is_none() && !spans.is_empty(), "served bytes do not scan: {why:?}");
                for s in spans {
                    assert_eq!(s.header.base_offset, offset, "offsets are dense");
                    offset = s.header.next_offset();
                    got.push(r.records.slice(s.start..s.end));
                }
            }
            assert_eq!(offset, end);
            log.close().await.expect("close");
            got
        })
    });
    if !built.is_empty() {
        let mut at = 0;
        let whole = built.iter().take_while(|b| {
            at += b.len();
            at <= first_bad
        });
        assert!(got.len() >= whole.count(), "lost an undamaged batch");
        assert!(got.len() <= built.len());
        for (g, b) in got.iter().zip(&built) {
            assert_eq!(masked(g), masked(b), "served a batch that was not written");
        }
    }
});
