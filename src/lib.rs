//! # corestream
//!
//! (architecture overview: written below as the modules land)

pub mod cli;
pub mod config;
pub mod handlers;
pub mod limits;
pub mod net;
pub mod protocol;
pub mod shard;
pub mod storage;
pub mod util;
