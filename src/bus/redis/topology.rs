//! Which primary owns which slots of a Redis Cluster, as `CLUSTER SLOTS` says, and the
//! slot of a key. The node asks when a shard link (re)connects and when a channel's
//! subscription is refused with `MOVED` or taken away with `sunsubscribe`: the cluster
//! itself is the only source of truth, so nothing here is kept longer than it helps.

use redis::Value;
use redis::aio::ConnectionLike;

use crate::bus::BusError;

/// A Redis Cluster's slot count.
const SLOTS: u16 = 16_384;

/// The slot of `key`: CRC16 (XMODEM) of its hash tag (the first non-empty `{…}`), or of
/// the whole key, modulo 16,384, as every cluster client computes it.
pub fn slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key).unwrap_or(key)) % SLOTS
}

fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|b| *b == b'{')?;
    let len = key[open + 1..].iter().position(|b| *b == b'}')?;
    let tag = &key[open + 1..open + 1 + len];
    (!tag.is_empty()).then_some(tag)
}

/// A hash tag (`{…}`) whose keys fall in `slot`: how a shard link names a probe channel
/// that its own shard serves. At most a few tens of thousands of CRCs, once per link.
pub fn tag_for(slot: u16) -> String {
    (0u32..)
        .map(|n| n.to_string())
        .find(|tag| self::slot(tag.as_bytes()) == slot)
        .map(|tag| format!("{{{tag}}}"))
        .unwrap_or_default()
}

/// A primary's address, as the cluster announces it.
pub type Addr = (String, u16);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    ranges: Vec<(u16, u16, Addr)>,
}

impl Topology {
    /// Asks one cluster node (the cluster connection picks it) for the slot map.
    pub async fn fetch(conn: &mut impl ConnectionLike) -> Result<Self, BusError> {
        let reply: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
        let ranges = reply
            .into_iter()
            .map(range)
            .collect::<Option<Vec<_>>>()
            .ok_or(BusError::Malformed("CLUSTER SLOTS"))?;
        Ok(Self { ranges })
    }

    /// The primary serving `slot`, if the cluster covers it.
    pub fn owner(&self, slot: u16) -> Option<&Addr> {
        self.ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, addr)| addr)
    }

    /// Every primary serving some slot.
    pub fn primaries(&self) -> impl Iterator<Item = &Addr> {
        self.ranges.iter().map(|(_, _, addr)| addr)
    }

    /// The highest slot `addr` serves: a shard link's anchor. Resharding with `redis-cli`
    /// moves a shard's lowest slots first, so the anchor is the last to leave.
    pub fn anchor_of(&self, addr: &Addr) -> Option<u16> {
        self.ranges
            .iter()
            .filter(|(_, _, a)| a == addr)
            .map(|(_, end, _)| *end)
            .max()
    }
}

/// One `CLUSTER SLOTS` entry: `[start, end, [host, port, id, …], replicas…]`.
fn range(entry: Value) -> Option<(u16, u16, Addr)> {
    let Value::Array(items) = entry else {
        return None;
    };
    let start = redis::from_redis_value::<u16>(items.first()?.clone()).ok()?;
    let end = redis::from_redis_value::<u16>(items.get(1)?.clone()).ok()?;
    let Value::Array(primary) = items.get(2)? else {
        return None;
    };
    let host = redis::from_redis_value::<String>(primary.first()?.clone()).ok()?;
    let port = redis::from_redis_value::<u16>(primary.get(1)?.clone()).ok()?;
    Some((start, end, (host, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12_182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(hash_tag(b"foo{}{bar}"), None);
        assert_eq!(hash_tag(b"foo{{bar}}"), Some(&b"{bar"[..]));
        assert_eq!(hash_tag(b"a{b"), None);
    }

    #[test]
    fn a_tag_lands_on_its_slot() {
        for s in [0, 1, 5_460, 16_383] {
            let key = format!("rc:$probe:n:{}", tag_for(s));
            assert_eq!(slot(key.as_bytes()), s);
        }
    }

    #[test]
    fn owners_and_anchors() {
        let a: Addr = ("10.0.0.1".into(), 7000);
        let b: Addr = ("10.0.0.2".into(), 7001);
        let t = Topology {
            ranges: vec![
                (0, 99, a.clone()),
                (100, 199, b.clone()),
                (200, 16_383, a.clone()),
            ],
        };
        assert_eq!(t.owner(150), Some(&b));
        assert_eq!(t.owner(16_383), Some(&a));
        assert_eq!(t.anchor_of(&a), Some(16_383));
        assert_eq!(t.anchor_of(&b), Some(199));
        assert_eq!(Topology::default().owner(0), None);
    }
}
