//! The Kafka wire protocol: framing and record batches. No I/O here.

pub mod batch;
pub mod bounded;
pub mod compression;
pub mod errors;
pub mod fetch_encode;
pub mod frame;
