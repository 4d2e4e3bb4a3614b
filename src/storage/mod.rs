//! Storage: partition logs made of segments, with sparse indexes.

pub mod index;
pub mod log;
pub mod producers;
pub mod syncer;
