//! Bounded decompression of a record batch's records area, for the few places
//! that must look inside compressed batches (timestamp lookups today).
//!
//! Produce stores batches as the client compressed them and never decompresses.
//! Output is capped: a batch that inflates past the cap is an error, so a
//! compression bomb costs at most the cap in memory. Codecs as Kafka numbers
//! them: 1 gzip, 2 snappy (raw, or the xerial framing the Java client writes),
//! 3 lz4 (frame format), 4 zstd.

use std::io::Read;

/// Magic of snappy-java's (xerial) framing.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// The records area of a compressed batch, decompressed, at most `limit` bytes.
pub fn decompress(codec: u8, data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    match codec {
        0 => Ok(data.to_vec()),
        1 => read_capped(flate2::read::GzDecoder::new(data), limit),
        2 => snappy(data, limit),
        3 => read_capped(lz4_flex::frame::FrameDecoder::new(data), limit),
        4 => {
            let d = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| format!("zstd: {e}"))?;
            read_capped(d, limit)
        }
        c => Err(format!("unknown compression codec {c}")),
    }
}

fn read_capped(r: impl Read, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| format!("decompressing: {e}"))?;
    if out.len() > limit {
        return Err(format!("batch decompresses to more than {limit} bytes"));
    }
    Ok(out)
}

fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let n = snap::raw::decompress_len(block).map_err(|e| format!("snappy: {e}"))?;
        if out.len() + n > limit {
            return Err(format!("batch decompresses to more than {limit} bytes"));
        }
        let at = out.len();
        out.resize(at + n, 0);
        snap::raw::Decoder::new().decompress(block, &mut out[at..]).map_err(|e| format!("snappy: {e}"))?;
        Ok(())
    };
    let mut out = Vec::new();
    if !data.starts_with(XERIAL_MAGIC) {
        raw(data, &mut out)?;
        return Ok(out);
    }
    // Magic (8), version (4), compatible version (4), then (length u32 BE, block)*.
    let mut at = 16;
    if data.len() < at {
        return Err("snappy: truncated xerial header".into());
    }
    while at < data.len() {
        let len = data.get(at..at + 4).ok_or("snappy: truncated block length")?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        at += 4;
        let block = data.get(at..at.saturating_add(len)).ok_or("snappy: truncated block")?;
        raw(block, &mut out)?;
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        (0..50_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    #[test]
    fn every_codec_round_trips_and_is_capped() {
        let data = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for chunk in data.chunks(32 * 1024) {
            let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            xerial.extend_from_slice(&(c.len() as u32).to_be_bytes());
            xerial.extend_from_slice(&c);
        }
        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz.write_all(&data).unwrap();
        let lz = lz.finish().unwrap();
        let zs = zstd::stream::encode_all(&data[..], 3).unwrap();
        for (codec, bytes) in [(1u8, &gz), (2, &raw_snappy), (2, &xerial), (3, &lz), (4, &zs)] {
            assert_eq!(decompress(codec, bytes, data.len()).unwrap(), data, "codec {codec}");
            assert!(decompress(codec, bytes, data.len() - 1).is_err(), "codec {codec}: the cap holds");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for n in 0..400usize {
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for codec in 0..=5u8 {
                let _ = decompress(codec, &bytes, 1 << 20);
            }
            let mut framed = XERIAL_MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decompress(2, &framed, 1 << 20);
        }
    }
}
