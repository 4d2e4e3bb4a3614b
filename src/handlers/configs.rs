//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics, and
//! DescribeConfigs for the broker (its settings are static: read-only).

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{decode, respond, str_bytes, HandlerError};
use crate::config::{topic_key, TOPIC_KEYS};
use crate::protocol::errors as ec;
use crate::protocol::frame::Request;
use crate::shard::{AdminOp, ConfigChange, Shard};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub async fn describe(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let d: DescribeConfigsRequest = decode(&req, ApiKey::DescribeConfigs)?;
    let image = shard.image();
    let mut results = Vec::new();
    for r in d.resources {
        let keys: Option<Vec<String>> = r.configuration_keys.as_ref().map(|k| k.iter().map(|s| s.to_string()).collect());
        let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == name));
        let base = DescribeConfigsResult::default().with_resource_type(r.resource_type).with_resource_name(r.resource_name.clone());
        let result = match r.resource_type {
            RESOURCE_TOPIC => match image.topics.get(r.resource_name.as_str()) {
                None => base.with_error_code(ec::UNKNOWN_TOPIC_OR_PARTITION).with_error_message(Some(str_bytes("unknown topic"))),
                Some(t) => {
                    let configs = TOPIC_KEYS
                        .iter()
                        .filter(|k| wanted(k.name))
                        .map(|k| {
                            let over = t.configs.get(k.name);
                            let default = shard.config.topic_default(k.name);
                            let value = over.map(str::to_string).unwrap_or_else(|| default.clone());
                            let source = if over.is_some() { SOURCE_DYNAMIC_TOPIC } else { SOURCE_DEFAULT };
                            let mut synonyms = Vec::new();
                            if d.include_synonyms {
                                if let Some(v) = over {
                                    synonyms.push(DescribeConfigsSynonym::default().with_name(str_bytes(k.name)).with_value(Some(str_bytes(v))).with_source(SOURCE_DYNAMIC_TOPIC));
                                }
                                synonyms.push(DescribeConfigsSynonym::default().with_name(str_bytes(k.broker_synonym)).with_value(Some(str_bytes(&default))).with_source(SOURCE_DEFAULT));
                            }
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(k.name))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_read_only(false)
                                .with_config_source(source)
                                .with_is_sensitive(k.sensitive)
                                .with_synonyms(synonyms)
                                .with_config_type(if req.api_version >= 3 { k.config_type } else { 0 })
                        })
                        .collect();
                    base.with_error_code(ec::NONE).with_configs(configs)
                }
            },
            RESOURCE_BROKER => {
                if !r.resource_name.is_empty() && r.resource_name.as_str() != shard.config.node_id.to_string() {
                    base.with_error_code(ec::INVALID_REQUEST).with_error_message(Some(str_bytes("unknown broker id")))
                } else {
                    let configs = shard
                        .config
                        .entries()
                        .into_iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(k))
                                .with_value(Some(StrBytes::from_string(v)))
                                .with_read_only(true)
                                .with_config_source(SOURCE_STATIC_BROKER)
                        })
                        .collect();
                    base.with_error_code(ec::NONE).with_configs(configs)
                }
            }
            _ => base.with_error_code(ec::INVALID_REQUEST).with_error_message(Some(str_bytes("unsupported resource type"))),
        };
        results.push(result);
    }
    respond(&req, ApiKey::DescribeConfigs, &DescribeConfigsResponse::default().with_results(results))
}

/// Runs one topic config change on the controller and maps the result.
async fn alter_topic(shard: &Rc<Shard>, resource_type: i8, name: &StrBytes, ops: Vec<ConfigChange>, replace: bool, validate_only: bool) -> (i16, Option<String>) {
    match resource_type {
        RESOURCE_TOPIC => {
            let r = shard.admin(AdminOp::AlterConfigs { topic: name.to_string(), ops, replace, validate_only }).await;
            r.into_iter().next().map(|r| (r.error, r.message)).unwrap_or((ec::UNKNOWN_SERVER_ERROR, None))
        }
        RESOURCE_BROKER => (ec::INVALID_REQUEST, Some("broker settings are static; change them in the config file".into())),
        _ => (ec::INVALID_REQUEST, Some("unsupported resource type".into())),
    }
}

pub async fn alter(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let a: AlterConfigsRequest = decode(&req, ApiKey::AlterConfigs)?;
    let mut responses = Vec::new();
    for r in a.resources {
        let ops = r
            .configs
            .iter()
            .map(|c| match &c.value {
                Some(v) => ConfigChange::Set(c.name.to_string(), v.to_string()),
                None => ConfigChange::Delete(c.name.to_string()),
            })
            .collect();
        let (code, message) = alter_topic(shard, r.resource_type, &r.resource_name, ops, true, a.validate_only).await;
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    respond(&req, ApiKey::AlterConfigs, &AlterConfigsResponse::default().with_responses(responses))
}

pub async fn incremental_alter(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let a: IncrementalAlterConfigsRequest = decode(&req, ApiKey::IncrementalAlterConfigs)?;
    let image = shard.image();
    let mut responses = Vec::new();
    for r in a.resources {
        let current = image.topics.get(r.resource_name.as_str()).map(|t| t.configs.clone()).unwrap_or_default();
        let mut ops = Vec::new();
        let mut bad = None;
        for c in &r.configs {
            let name = c.name.to_string();
            let value = c.value.as_ref().map(|v| v.to_string());
            match c.config_operation {
                0 => ops.push(ConfigChange::Set(name, value.unwrap_or_default())),
                1 => ops.push(ConfigChange::Delete(name)),
                // APPEND / SUBTRACT apply to list-typed configs; our only list is cleanup.policy.
                2 | 3 => {
                    let is_list = topic_key(&name).is_some_and(|k| k.config_type == 7);
                    if !is_list {
                        bad = Some(format!("{name} is not a list config"));
                        break;
                    }
                    let default = shard.config.topic_default(&name);
                    let cur = current.get(&name).unwrap_or(&default);
                    let mut items: Vec<String> = cur.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
                    for v in value.unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
                        if c.config_operation == 2 && !items.iter().any(|i| i == v) {
                            items.push(v.to_string());
                        } else if c.config_operation == 3 {
                            items.retain(|i| i != v);
                        }
                    }
                    ops.push(ConfigChange::Set(name, items.join(",")));
                }
                op => {
                    bad = Some(format!("unknown config operation {op}"));
                    break;
                }
            }
        }
        let (code, message) = match bad {
            Some(m) => (ec::INVALID_REQUEST, Some(m)),
            None => alter_topic(shard, r.resource_type, &r.resource_name, ops, false, a.validate_only).await,
        };
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    respond(&req, ApiKey::IncrementalAlterConfigs, &IncrementalAlterConfigsResponse::default().with_responses(responses))
}
