//! The directory on Redis: each node's channel counts in a hash of its own
//! (`<prefix>$node:<id>`, with a TTL), the set of nodes that reported
//! (`<prefix>$nodes`, pruned of nodes whose hash lapsed), and orders published on
//! `<prefix>$control`, which every node's link subscribes to beside its probe channel.
//! `$` never appears in a channel name, so none of these can clash with a room.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::RedisBus;
use crate::bus::BusError;
use crate::bus::directory::{Control, Directory};
use crate::channel::ChannelName;

/// Fields written per `HSET`: keeps each command small when a node hosts many channels.
const BATCH: usize = 512;

impl super::Shared {
    pub(super) fn control_channel(&self) -> String {
        format!("{}$control", self.prefix)
    }

    /// One hash tag for every directory key, so that a node's report (one `MULTI`) and
    /// a listing stay in one slot of a Redis Cluster.
    fn nodes_key(&self) -> String {
        format!("{{{}$directory}}:nodes", self.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{{{}$directory}}:node:{node}", self.prefix)
    }
}

#[async_trait]
impl Directory for RedisBus {
    async fn control(&self, control: &Control) -> Result<(), BusError> {
        let mut publisher = self.publisher()?;
        let payload = serde_json::to_vec(control).map_err(|_| BusError::Malformed("control"))?;
        redis::cmd(self.shared.publish_command())
            .arg(self.shared.control_channel())
            .arg(payload)
            .query_async::<i64>(&mut publisher)
            .await?;
        Ok(())
    }

    async fn report(
        &self,
        node: &str,
        counts: &[(ChannelName, u64)],
        ttl: Duration,
    ) -> Result<(), BusError> {
        let mut publisher = self.publisher()?;
        let key = self.shared.node_key(node);
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        for batch in counts.chunks(BATCH) {
            let fields: Vec<(&str, u64)> = batch.iter().map(|(c, n)| (c.as_str(), *n)).collect();
            pipe.hset_multiple(&key, &fields).ignore();
        }
        pipe.pexpire(&key, ttl.as_millis() as i64).ignore();
        pipe.sadd(self.shared.nodes_key(), node).ignore();
        pipe.query_async::<()>(&mut publisher).await?;
        Ok(())
    }

    async fn channels(&self) -> Result<BTreeMap<String, u64>, BusError> {
        let mut publisher = self.publisher()?;
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.shared.nodes_key())
            .query_async(&mut publisher)
            .await?;
        let mut pipe = redis::pipe();
        for node in &nodes {
            pipe.hgetall(self.shared.node_key(node));
        }
        let hashes: Vec<BTreeMap<String, u64>> = pipe.query_async(&mut publisher).await?;
        let mut total = BTreeMap::new();
        let mut lapsed = Vec::new();
        for (node, hash) in nodes.iter().zip(hashes) {
            if hash.is_empty() {
                lapsed.push(node);
            }
            for (channel, n) in hash {
                *total.entry(channel).or_insert(0) += n;
            }
        }
        if !lapsed.is_empty() {
            // A node with no channels reports an empty hash, which Redis does not keep:
            // it is back in the set on its next report.
            let _ = redis::cmd("SREM")
                .arg(self.shared.nodes_key())
                .arg(lapsed)
                .query_async::<i64>(&mut publisher)
                .await;
        }
        Ok(total)
    }
}
