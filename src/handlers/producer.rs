//! InitProducerId: producer ids for idempotent producers.
//!
//! Every call without a transactional id gets a fresh producer id (epoch 0),
//! as Kafka does: ids come from per-shard blocks that shard 0 reserves
//! durably, so an id is never handed out twice, even across restarts. The
//! partitions' owners then enforce sequence numbers per producer id (see
//! [`crate::storage::producers`]). Transactional ids need the transaction
//! coordinator, which is not built yet.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{decode, respond, HandlerError};
use crate::protocol::errors as ec;
use crate::protocol::frame::Request;
use crate::shard::Shard;

pub async fn init_producer_id(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let body: InitProducerIdRequest = decode(&req, ApiKey::InitProducerId)?;
    let fail = |e: i16| InitProducerIdResponse::default().with_error_code(e).with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if body.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        return respond(&req, ApiKey::InitProducerId, &fail(ec::TRANSACTIONAL_ID_AUTHORIZATION_FAILED));
    }
    let resp = match shard.next_producer_id().await {
        Ok(id) => InitProducerIdResponse::default().with_error_code(ec::NONE).with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => fail(e),
    };
    respond(&req, ApiKey::InitProducerId, &resp)
}
