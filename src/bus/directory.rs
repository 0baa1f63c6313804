//! The cluster's directory, beside the bus: which channels have subscribers anywhere, and
//! how many (each node reports its own, on a TTL, so a dead node's entries lapse), and
//! orders for every node (`Control`). What the HTTP API's `/api/channels` and
//! `/api/disconnect` read and send, without the nodes asking one another.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::BusError;
use crate::channel::ChannelName;

/// An order for every node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// Close every connection of this user (`sub`).
    Disconnect { user: String },
}

#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Sends an order to every node, this one included (reported through
    /// `BusEvents::control`).
    async fn control(&self, control: &Control) -> Result<(), BusError>;
    /// Replaces this node's entry: its channels and their local subscriber counts, kept
    /// for `ttl` unless reported again.
    async fn report(
        &self,
        node: &str,
        counts: &[(ChannelName, u64)],
        ttl: Duration,
    ) -> Result<(), BusError>;
    /// Every channel with a subscriber on some live node, with the total count.
    async fn channels(&self) -> Result<BTreeMap<String, u64>, BusError>;
}

/// One node's report: its channels' counts, and until when they hold.
type Report = (Vec<(ChannelName, u64)>, Instant);

/// The directory of one node: its own report, kept in memory.
#[derive(Default)]
pub struct MemoryDirectory {
    nodes: Mutex<HashMap<String, Report>>,
}

impl MemoryDirectory {
    pub fn report(&self, node: &str, counts: &[(ChannelName, u64)], ttl: Duration) {
        self.nodes
            .lock()
            .insert(node.to_owned(), (counts.to_vec(), Instant::now() + ttl));
    }

    pub fn channels(&self) -> BTreeMap<String, u64> {
        let now = Instant::now();
        let mut nodes = self.nodes.lock();
        nodes.retain(|_, (_, until)| *until > now);
        let mut total = BTreeMap::new();
        for (counts, _) in nodes.values() {
            for (channel, n) in counts {
                *total.entry(channel.to_string()).or_insert(0) += n;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reports_add_up_and_lapse() {
        let dir = MemoryDirectory::default();
        let a = ChannelName::parse("chat:a").unwrap();
        let b = ChannelName::parse("chat:b").unwrap();
        dir.report(
            "n1",
            &[(a.clone(), 2), (b.clone(), 1)],
            Duration::from_secs(10),
        );
        dir.report("n2", &[(a.clone(), 3)], Duration::from_secs(5));
        assert_eq!(dir.channels().get("chat:a"), Some(&5));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(dir.channels().get("chat:a"), Some(&2), "n2 lapsed");
        dir.report("n1", &[], Duration::from_secs(10));
        assert!(dir.channels().is_empty());
    }

    #[test]
    fn control_reads_and_writes_as_documented() {
        let c = Control::Disconnect {
            user: "alice".into(),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"disconnect":{"user":"alice"}}"#);
        assert_eq!(serde_json::from_str::<Control>(&json).unwrap(), c);
    }
}
