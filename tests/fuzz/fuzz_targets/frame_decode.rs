//! The connection's read path on arbitrary bytes: the size prefix, the request header, and
//! the decode step of the handler the api key selects (for advertised versions).
#![no_main]

use bytes::Bytes;
use corestream::handlers::{api_versions, decode_only};
use corestream::protocol::frame::{frame_size, parse_request};
use kafka_protocol::messages::ApiKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let max = 1 << 20;
    let mut buf = data;
    // Like the connection: take every complete frame.
    loop {
        match frame_size(buf, max) {
            Ok(Some(size)) => {
                assert!(size >= 1 && size <= max);
                let Some(frame) = buf.get(4..4 + size) else { return };
                if let Ok(req) = parse_request(Bytes::copy_from_slice(frame)) {
                    assert!(req.body.len() + 8 <= frame.len());
                    let supported = ApiKey::try_from(req.api_key)
                        .ok()
                        .and_then(api_versions::supported)
                        .is_some_and(|(lo, hi)| (lo..=hi).contains(&req.api_version));
                    if supported {
                        let _ = decode_only(&req);
                    }
                }
                buf = &buf[4 + size..];
            }
            Ok(None) => return,
            Err(_) => {
                assert!(buf.len() >= 4);
                return;
            }
        }
    }
});
