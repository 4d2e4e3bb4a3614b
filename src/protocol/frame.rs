//! Request framing: the 4-byte size prefix, the request header, and response
//! encoding. Pure functions over bytes.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame size {size} is outside 1..={max}")]
    BadSize { size: i64, max: usize },
    #[error("request header is malformed: {0}")]
    BadHeader(String),
    #[error("unknown api key {0}")]
    UnknownApi(i16),
}

/// Reads the size prefix at the start of `buf`: `Ok(None)` when fewer than
/// 4 bytes are there, an error when the size is not acceptable.
pub fn frame_size(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..4) else { return Ok(None) };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if size <= 0 || size as usize > max {
        return Err(FrameError::BadSize { size: size as i64, max });
    }
    Ok(Some(size as usize))
}

/// The parts of a request every handler needs.
#[derive(Debug, Clone)]
pub struct Request {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub header: RequestHeader,
    /// The body, after the header.
    pub body: Bytes,
    /// The client's address, when the connection knows it (group members report it).
    pub peer: Option<std::net::IpAddr>,
}

/// Decodes a request header. Unknown api keys are an error; so is a header that
/// does not fit. The api key and version are read first so that an unsupported
/// version can still be answered.
pub fn parse_request(mut frame: Bytes) -> Result<Request, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::BadHeader("shorter than 8 bytes".into()));
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(api_key).map_err(|_| FrameError::UnknownApi(api_key))?;
    // Versions beyond what the header schema knows still have a v1/v2 header;
    // clamp into the known range so the header itself can be read.
    let range = key.valid_versions();
    let header_version = key.request_header_version(api_version.clamp(range.min, range.max));
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| FrameError::BadHeader(e.to_string()))?;
    Ok(Request { api_key, api_version, correlation_id, header, body: frame, peer: None })
}

/// Encodes a response frame: size prefix, response header, body.
pub fn encode_response<M: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Bytes, String> {
    let header_version = api_key.response_header_version(api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(|e| e.to_string())?
        + body.compute_size(api_version).map_err(|e| e.to_string())?;
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(size as i32);
    header.encode(&mut out, header_version).map_err(|e| e.to_string())?;
    body.encode(&mut out, api_version).map_err(|e| e.to_string())?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn frame_size_rejects_bad_prefixes() {
        assert_eq!(frame_size(&[0, 0, 0], 100), Ok(None));
        assert_eq!(frame_size(&[0, 0, 0, 10, 1], 100), Ok(Some(10)));
        assert!(frame_size(&[0, 0, 0, 0], 100).is_err());
        assert!(frame_size(&[0xff, 0xff, 0xff, 0xff], 100).is_err());
        assert!(frame_size(&[0, 0, 1, 0], 100).is_err());
    }

    #[test]
    fn parses_a_real_header_and_rejects_junk() {
        let header = RequestHeader::default()
            .with_request_api_key(18)
            .with_request_api_version(3)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("t")));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, 2).unwrap();
        ApiVersionsRequest::default().encode(&mut buf, 3).unwrap();
        let r = parse_request(buf.freeze()).unwrap();
        assert_eq!((r.api_key, r.api_version, r.correlation_id), (18, 3, 42));
        assert_eq!(r.header.client_id.as_deref(), Some("t"));
        assert!(matches!(parse_request(Bytes::from_static(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1])), Err(FrameError::UnknownApi(_))));
        assert!(parse_request(Bytes::from_static(&[0, 18, 0, 3])).is_err());
        // A v2 header whose client id length runs past the end.
        assert!(parse_request(Bytes::from_static(&[0, 18, 0, 3, 0, 0, 0, 1, 0, 50, b'x'])).is_err());
    }
}
