//! Presence, beside the bus: who is subscribed to a channel, cluster-wide, with each
//! client's info. Every node writes its own clients' entries and refreshes them on a TTL,
//! so the clients of a node that died vanish within the TTL; join and leave are announced
//! on the channel itself (reported through `BusEvents::presence`), so each subscriber
//! hears each once. Implemented in memory (one node) and on Redis (`redis/roomcast.lua`).

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::envelope::PresenceEvent;
use super::{BusError, BusEvents};
use crate::channel::ChannelName;

/// Largest page of a presence listing.
pub const MAX_PAGE: usize = 1000;

/// One member: the client's id and its info (JSON text).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub client: String,
    pub info: Bytes,
}

/// A page of members, and the cursor of the next page (`None` at the end).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPage {
    pub members: Vec<Member>,
    pub next: Option<String>,
}

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Adds a member (announcing `join` if it is new) for `ttl`.
    async fn join(
        &self,
        channel: &ChannelName,
        member: &Member,
        ttl: Duration,
    ) -> Result<(), BusError>;
    /// Removes a member, announcing `leave`.
    async fn leave(&self, channel: &ChannelName, client: &str) -> Result<(), BusError>;
    /// Extends this node's members by `ttl` (adding back any that were forgotten), and
    /// removes expired ones, announcing `leave` for each.
    async fn refresh(
        &self,
        channel: &ChannelName,
        members: &[Member],
        ttl: Duration,
    ) -> Result<(), BusError>;
    /// A page of members, from `cursor` (`None`: the first page).
    async fn members(
        &self,
        channel: &ChannelName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<MemberPage, BusError>;
    /// How many members a channel has; cheap whatever the size.
    async fn count(&self, channel: &ChannelName) -> Result<u64, BusError>;
}

/// A room's members: client id → (info, when it expires).
type Room = HashMap<String, (Bytes, Instant)>;

/// Presence kept in this process, for the memory bus.
pub struct MemoryPresence {
    rooms: Mutex<HashMap<ChannelName, Room>>,
    /// The node; weak because the node owns the bus.
    events: Weak<dyn BusEvents>,
}

impl MemoryPresence {
    pub fn new(events: Weak<dyn BusEvents>) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            events,
        }
    }

    fn announce(&self, channel: &ChannelName, joined: bool, client: &str, info: Bytes) {
        if let Some(events) = self.events.upgrade() {
            let event = PresenceEvent {
                joined,
                client: client.to_string(),
                info,
            };
            events.presence(channel.clone(), event);
        }
    }

    /// Removes expired members; returns them, to announce once the lock is released.
    fn sweep(&self, channel: &ChannelName) -> Vec<String> {
        let now = Instant::now();
        let mut rooms = self.rooms.lock();
        let Some(room) = rooms.get_mut(channel) else {
            return Vec::new();
        };
        let gone: Vec<String> = room
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(client, _)| client.clone())
            .collect();
        for client in &gone {
            room.remove(client);
        }
        if room.is_empty() {
            rooms.remove(channel);
        }
        gone
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn join(
        &self,
        channel: &ChannelName,
        member: &Member,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let until = Instant::now() + ttl;
        let entry = (member.info.clone(), until);
        let new = self
            .rooms
            .lock()
            .entry(channel.clone())
            .or_default()
            .insert(member.client.clone(), entry)
            .is_none();
        if new {
            self.announce(channel, true, &member.client, member.info.clone());
        }
        Ok(())
    }

    async fn leave(&self, channel: &ChannelName, client: &str) -> Result<(), BusError> {
        let gone = {
            let mut rooms = self.rooms.lock();
            let gone = rooms.get_mut(channel).and_then(|room| room.remove(client));
            if rooms.get(channel).is_some_and(HashMap::is_empty) {
                rooms.remove(channel);
            }
            gone.is_some()
        };
        if gone {
            self.announce(channel, false, client, Bytes::from_static(b"null"));
        }
        Ok(())
    }

    async fn refresh(
        &self,
        channel: &ChannelName,
        members: &[Member],
        ttl: Duration,
    ) -> Result<(), BusError> {
        let until = Instant::now() + ttl;
        if !members.is_empty() {
            let mut rooms = self.rooms.lock();
            let room = rooms.entry(channel.clone()).or_default();
            for m in members {
                room.insert(m.client.clone(), (m.info.clone(), until));
            }
        }
        for client in self.sweep(channel) {
            self.announce(channel, false, &client, Bytes::from_static(b"null"));
        }
        Ok(())
    }

    async fn members(
        &self,
        channel: &ChannelName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<MemberPage, BusError> {
        for client in self.sweep(channel) {
            self.announce(channel, false, &client, Bytes::from_static(b"null"));
        }
        let rooms = self.rooms.lock();
        let Some(room) = rooms.get(channel) else {
            return Ok(MemberPage {
                members: Vec::new(),
                next: None,
            });
        };
        // Ordered by client id, and the cursor is the last id handed out: stable pages.
        let mut ids: Vec<&String> = room.keys().filter(|c| Some(c.as_str()) > cursor).collect();
        ids.sort_unstable();
        let limit = limit.clamp(1, MAX_PAGE);
        let next = (ids.len() > limit).then(|| ids[limit - 1].clone());
        let members = ids
            .into_iter()
            .take(limit)
            .map(|client| Member {
                client: client.clone(),
                info: room[client].0.clone(),
            })
            .collect();
        Ok(MemberPage { members, next })
    }

    async fn count(&self, channel: &ChannelName) -> Result<u64, BusError> {
        let now = Instant::now();
        let rooms = self.rooms.lock();
        Ok(rooms.get(channel).map_or(0, |room| {
            room.values().filter(|(_, until)| *until > now).count() as u64
        }))
    }
}
