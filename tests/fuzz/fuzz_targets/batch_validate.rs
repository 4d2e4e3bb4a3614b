//! Record batch validation (`protocol::batch`) on arbitrary bytes. If the first byte is odd
//! the CRC of the leading batch is fixed up first, so the fuzzer reaches the header rules and
//! the record walk. Whatever produce validation accepts must be sound: contiguous spans, each
//! a stored batch with a valid CRC, and (uncompressed) decodable by kafka-protocol's
//! `RecordBatchDecoder` into exactly `recordsCount` records.
#![no_main]

use bytes::Bytes;
use corestream::protocol::batch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, max_hi, rest @ ..] = data else { return };
    let mut buf = rest.to_vec();
    if mode & 1 == 1 {
        let _ = batch::fix_crc(&mut buf);
    }
    let max = if mode & 2 == 2 { usize::from(*max_hi) * 8 } else { usize::MAX };
    if let Ok(spans) = batch::split_and_validate(&buf, max) {
        let mut at = 0;
        for s in &spans {
            assert_eq!(s.start, at);
            assert!(s.header.total_bytes() <= max);
            let bytes = Bytes::copy_from_slice(&buf[s.start..s.end]);
            assert!(batch::check_stored_batch(&bytes).is_ok());
            if s.header.compression() == 0 {
                let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes.clone())
                    .expect("a validated batch decodes");
                assert_eq!(set.records.len(), s.header.records_count as usize);
                let (_, kvs) = batch::key_values(&bytes).expect("a validated batch has key/values");
                assert_eq!(kvs.len(), set.records.len());
            }
            at = s.end;
        }
        assert_eq!(at, buf.len());
        let mut copy = buf.clone();
        batch::stamp(&mut copy[spans[0].start..spans[0].end], 7, 1, Some(1));
        assert!(batch::check_stored_batch(&copy).is_ok());
    }
    let (spans, why) = batch::scan_batches(&buf);
    assert_eq!(why.is_none(), spans.last().map_or(0, |s| s.end) == buf.len());
    let _ = batch::key_values(&Bytes::copy_from_slice(&buf));
    let _ = batch::control_marker(&buf);
    let _ = batch::try_stamp(&mut buf, 1, 1, Some(1));
});
