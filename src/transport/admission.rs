//! Admission before any upgrade work: the node-wide connection limit and the limit per
//! source address, checked on the plain HTTP request so that a flood of upgrades costs
//! the node no WebSocket state. Behind a trusted proxy the source address is the last
//! `X-Forwarded-For` entry the proxy added.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::Request;
use ipnet::IpNet;
use parking_lot::Mutex;

/// Connections held, in all and per source address, shared by every connection's
/// [`AddressSlot`]: `/ws` and `/echo` alike.
pub struct Addresses {
    max_total: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, u32>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node holds `limits.max_connections`.
    Full,
    /// The address holds `limits.max_connections_per_ip`.
    Address,
}

/// One connection's place in its address's count, given back when dropped.
pub struct AddressSlot {
    table: Arc<Addresses>,
    ip: IpAddr,
}

impl Addresses {
    /// `max_per_address` 0: no limit per address.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A slot for one more connection from `ip`, unless the node or the address holds
    /// its maximum already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<AddressSlot, Refused> {
        let mut counts = self.counts.lock();
        if counts.total >= self.max_total {
            return Err(Refused::Full);
        }
        let count = counts.by_address.entry(ip).or_insert(0);
        if self.max_per_address != 0 && *count as usize >= self.max_per_address {
            return Err(Refused::Address);
        }
        *count += 1;
        counts.total += 1;
        Ok(AddressSlot {
            table: Arc::clone(self),
            ip,
        })
    }

    /// Connections held from `ip` now.
    pub fn count(&self, ip: IpAddr) -> u32 {
        self.counts.lock().by_address.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.by_address.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.by_address.remove(&self.ip);
            }
        }
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the last
/// address in `X-Forwarded-For` (the one that proxy added; earlier ones are the client's
/// say-so and could be forged).
pub fn client_ip<B>(req: &Request<B>, peer: SocketAddr, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !trusted.iter().any(|net| net.contains(&peer_ip)) {
        return peer_ip;
    }
    req.headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        .map_or(peer_ip, |ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_address_and_come_back_when_dropped() {
        let table = Addresses::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = table.take(a).unwrap();
        let _second = table.take(a).unwrap();
        assert_eq!(
            table.take(a).err(),
            Some(Refused::Address),
            "third from one address"
        );
        let other = table.take(b).unwrap();
        assert_eq!(table.take(b).err(), Some(Refused::Full), "the node holds 3");
        drop(other);
        assert_eq!(table.count(b), 0, "a dropped slot is given back");
        drop(first);
        assert!(table.take(a).is_ok());
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let req = Request::builder()
            .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
            .body(())
            .unwrap();
        let proxy: SocketAddr = "172.18.0.5:40000".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["172.16.0.0/12".parse().unwrap()];
        assert_eq!(
            client_ip(&req, proxy, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&req, proxy, &[]), proxy.ip());
        let stranger: SocketAddr = "198.51.100.1:1".parse().unwrap();
        assert_eq!(client_ip(&req, stranger, &trusted), stranger.ip());
    }
}
