//! The metadata image: topics, their partitions and which core owns each one
//! (the shard table). Pure data and placement math, no I/O but `load`/`save`.
//!
//! One image is authoritative at a time: core 0 (the controller shard) makes
//! every change, persists it, then hands a copy to every core before the admin
//! request that made it is answered. Each core reads its own copy without
//! locks. A future cluster controller will feed the same image.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::TopicOverrides;

/// Index of a core running a shard (0-based, dense).
pub type ShardId = usize;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// The shard that owns the partition's log.
    pub owner: ShardId,
    pub leader_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionMeta>,
    #[serde(default)]
    pub configs: TopicOverrides,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub node_id: i32,
    /// Bumped by every change.
    pub epoch: u64,
    /// How many shards the owners were assigned for.
    pub shards: usize,
    pub topics: BTreeMap<String, TopicMeta>,
}

impl MetadataImage {
    pub fn new(node_id: i32, shards: usize) -> MetadataImage {
        let id = uuid::Uuid::new_v4();
        MetadataImage {
            cluster_id: base64_url(id.as_bytes()),
            node_id,
            epoch: 0,
            shards,
            topics: BTreeMap::new(),
        }
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.id == id)
    }

    pub fn owner(&self, topic: &str, partition: i32) -> Option<ShardId> {
        let t = self.topics.get(topic)?;
        usize::try_from(partition).ok().and_then(|p| t.partitions.get(p)).map(|p| p.owner)
    }

    /// Partitions owned per shard.
    fn load_per_shard(&self, shards: usize) -> Vec<usize> {
        let mut load = vec![0usize; shards];
        for t in self.topics.values() {
            for p in &t.partitions {
                if let Some(l) = load.get_mut(p.owner) {
                    *l += 1;
                }
            }
        }
        load
    }

    /// Picks owners for `count` new partitions: each goes to the least-loaded
    /// shard, ties broken by the lowest shard after the previous pick, so a
    /// topic's partitions spread evenly across cores.
    pub fn place(&self, count: usize, shards: usize) -> Vec<ShardId> {
        assert!(shards > 0, "at least one shard");
        let mut load = self.load_per_shard(shards);
        let mut out = Vec::with_capacity(count);
        let mut last = shards - 1;
        for _ in 0..count {
            let min = *load.iter().min().expect("non-empty");
            let pick = (1..=shards).map(|i| (last + i) % shards).find(|&s| load[s] == min).expect("a minimum exists");
            load[pick] += 1;
            out.push(pick);
            last = pick;
        }
        out
    }

    /// Re-assigns partitions whose owner no longer exists after a restart with
    /// fewer cores, and spreads load onto new cores after one with more.
    /// Data stays where it is: any core can open any partition directory.
    pub fn rebalance(&mut self, shards: usize) {
        assert!(shards > 0, "at least one shard");
        if self.shards == shards {
            return;
        }
        let mut assignments: Vec<(String, usize)> = Vec::new();
        for t in self.topics.values() {
            for i in 0..t.partitions.len() {
                assignments.push((t.name.clone(), i));
            }
        }
        for (i, (topic, p)) in assignments.into_iter().enumerate() {
            if let Some(pm) = self.topics.get_mut(&topic).and_then(|t| t.partitions.get_mut(p)) {
                pm.owner = i % shards;
            }
        }
        self.shards = shards;
        self.epoch += 1;
    }

    pub fn load(path: &Path) -> std::io::Result<Option<MetadataImage>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the image atomically: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Kafka prints cluster and topic ids as URL-safe base64 without padding.
pub fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Kafka's rules for topic names: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > crate::limits::TOPIC_NAME_LEN_MAX {
        return Err(format!("topic name is longer than {} characters", crate::limits::TOPIC_NAME_LEN_MAX));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name contains the illegal character {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, owners: &[usize]) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: [1; 16],
            partitions: owners.iter().map(|&o| PartitionMeta { owner: o, leader_epoch: 0 }).collect(),
            configs: TopicOverrides::default(),
        }
    }

    #[test]
    fn placement_balances_across_shards() {
        let mut img = MetadataImage::new(1, 2);
        assert_eq!(img.place(4, 2), vec![0, 1, 0, 1]);
        img.topics.insert("a".into(), topic("a", &[0, 0, 0]));
        // Shard 1 is behind by three: it gets the next three.
        assert_eq!(img.place(4, 2), vec![1, 1, 1, 0]);
        assert_eq!(img.place(3, 3), vec![1, 2, 1]);
    }

    #[test]
    fn rebalance_keeps_every_owner_in_range() {
        let mut img = MetadataImage::new(1, 4);
        img.topics.insert("a".into(), topic("a", &[0, 1, 2, 3]));
        img.topics.insert("b".into(), topic("b", &[3, 2]));
        img.rebalance(2);
        let owners: Vec<usize> = img.topics.values().flat_map(|t| t.partitions.iter().map(|p| p.owner)).collect();
        assert!(owners.iter().all(|&o| o < 2));
        assert_eq!(owners.iter().filter(|&&o| o == 0).count(), 3);
        assert_eq!(img.shards, 2);
        let epoch = img.epoch;
        img.rebalance(2);
        assert_eq!(img.epoch, epoch, "same shard count: unchanged");
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(valid_topic_name("orders-1.v2_x").is_ok());
        assert!(valid_topic_name("").is_err());
        assert!(valid_topic_name("..").is_err());
        assert!(valid_topic_name("a/b").is_err());
        assert!(valid_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn image_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        assert_eq!(MetadataImage::load(&path).unwrap(), None);
        let mut img = MetadataImage::new(7, 2);
        img.topics.insert("a".into(), topic("a", &[1, 0]));
        img.save(&path).unwrap();
        assert_eq!(MetadataImage::load(&path).unwrap(), Some(img));
        assert_eq!(base64_url(&[0xff; 16]).len(), 22);
    }
}
