//! The envelope of a message on Redis, version 1. Two encodings of the same fields:
//! JSON, for backends and `redis-cli`, and MessagePack, which nodes write. A reader tells
//! them apart by the first byte (`{` or whitespace for JSON, a map marker for MessagePack).
//! On channels with history, `roomcast_publish` wraps the envelope it was given with its
//! position (`{v, o: offset, ep: epoch, e: envelope}`, MessagePack).
//! Spec: `proto/PROTOCOL.md`, section "Publishing from a backend".

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::StreamPosition;

/// Current envelope version. A reader rejects versions it does not know.
pub const VERSION: u32 = 1;

/// Longest accepted `id` and `traceparent`, in bytes.
const MAX_META_LEN: usize = 256;

/// What travels with a message besides its channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    /// The payload as JSON text; validated when it entered the cluster, never re-parsed.
    pub data: Bytes,
    /// Optional message id: nodes drop a repeat of an id on the same channel.
    pub id: Option<String>,
    /// Optional W3C trace context of the publisher.
    pub traceparent: Option<String>,
    /// When the message was published, in milliseconds since the Unix epoch.
    pub ts: Option<u64>,
    /// The node a client published through, when one did.
    pub node: Option<String>,
    /// Where the message stands in its channel's history, when the channel keeps one.
    pub position: Option<StreamPosition>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a JSON object or MessagePack map")]
    NotAnEnvelope,
    #[error("invalid JSON envelope")]
    Json(#[source] serde_json::Error),
    #[error("invalid MessagePack envelope")]
    Msgpack(#[source] rmp_serde::decode::Error),
    #[error("unsupported envelope version {0}")]
    Version(u32),
    #[error("`data` is missing")]
    NoData,
    #[error("`data` in a MessagePack envelope is not JSON text")]
    DataNotJson,
    #[error("`data` is nested deeper, or has a larger number, than every codec can carry")]
    TooDeep,
    #[error("`{0}` is longer than 256 bytes")]
    TooLong(&'static str),
    #[error("a positioned envelope needs `o`, `ep` and an envelope `e` that is not positioned")]
    BadPosition,
    #[error("a presence change needs `k` (join or leave), a client `c` and JSON info `i`")]
    BadPresence,
}

#[derive(Deserialize)]
struct JsonWire<'a> {
    #[serde(default)]
    v: Option<u32>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(default)]
    node: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The MessagePack form: short keys, `data` as binary JSON text, so that a receiving node
/// copies it straight into frames.
#[derive(Serialize, Deserialize)]
struct PackedWire {
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<serde_bytes::ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    /// The presence form: `join` or `leave`, the client, its info (JSON text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<serde_bytes::ByteBuf>,
    /// The positioned form: offset, epoch, and the envelope as published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ep: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<serde_bytes::ByteBuf>,
}

impl Envelope {
    pub fn decode(payload: &[u8]) -> Result<Self, EnvelopeError> {
        match Incoming::decode(payload)? {
            Incoming::Message(envelope) => Ok(envelope),
            Incoming::Presence(_) => Err(EnvelopeError::NotAnEnvelope),
        }
    }

    fn checked(self) -> Result<Self, EnvelopeError> {
        if !crate::protocol::deliverable(&self.data) {
            return Err(EnvelopeError::TooDeep);
        }
        for (name, value) in [("id", &self.id), ("traceparent", &self.traceparent)] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_META_LEN) {
                return Err(EnvelopeError::TooLong(name));
            }
        }
        Ok(self)
    }

    fn decode_json(payload: &[u8]) -> Result<Self, EnvelopeError> {
        let wire: JsonWire<'_> = serde_json::from_slice(payload).map_err(EnvelopeError::Json)?;
        let v = wire.v.unwrap_or(VERSION);
        if v != VERSION {
            return Err(EnvelopeError::Version(v));
        }
        let data = wire.data.ok_or(EnvelopeError::NoData)?;
        Ok(Self {
            data: Bytes::copy_from_slice(data.get().as_bytes()),
            id: wire.id,
            traceparent: wire.traceparent,
            ts: wire.ts,
            node: wire.node,
            position: None,
        })
    }

    fn from_packed(wire: PackedWire) -> Result<Self, EnvelopeError> {
        if let Some(inner) = wire.e {
            return Self::decode_positioned(&inner, wire.o, wire.ep);
        }
        let data = wire.d.ok_or(EnvelopeError::NoData)?.into_vec();
        // Nodes write valid JSON here; anything else was written by something else, and
        // checking it once per node is the price of never re-parsing it per subscriber.
        if serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_err() {
            return Err(EnvelopeError::DataNotJson);
        }
        Ok(Self {
            data: Bytes::from(data),
            id: wire.id,
            traceparent: wire.tp,
            ts: wire.ts,
            node: wire.n,
            position: None,
        })
    }

    fn decode_positioned(
        inner: &[u8],
        offset: Option<u64>,
        epoch: Option<String>,
    ) -> Result<Self, EnvelopeError> {
        let (Some(offset), Some(epoch)) = (offset, epoch) else {
            return Err(EnvelopeError::BadPosition);
        };
        let mut envelope = Self::decode(inner)?;
        if envelope.position.is_some() || epoch.is_empty() || epoch.len() > MAX_META_LEN {
            return Err(EnvelopeError::BadPosition);
        }
        envelope.position = Some(StreamPosition {
            offset,
            epoch: Arc::from(epoch),
        });
        Ok(envelope)
    }

    /// The MessagePack form nodes publish.
    pub fn encode(&self) -> Vec<u8> {
        let wire = PackedWire {
            v: VERSION,
            d: Some(serde_bytes::ByteBuf::from(self.data.to_vec())),
            id: self.id.clone(),
            tp: self.traceparent.clone(),
            ts: self.ts,
            n: self.node.clone(),
            k: None,
            c: None,
            i: None,
            o: None,
            ep: None,
            e: None,
        };
        // Serialising a plain struct into a Vec cannot fail.
        rmp_serde::to_vec_named(&wire).unwrap_or_default()
    }
}

/// What arrives on a roomcast channel: a message, or a presence change that
/// `roomcast_presence_*` announced.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Message(Envelope),
    Presence(PresenceEvent),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEvent {
    pub joined: bool,
    pub client: String,
    /// JSON text: the client's info on join, `null` on leave.
    pub info: Bytes,
}

impl Incoming {
    pub fn decode(payload: &[u8]) -> Result<Self, EnvelopeError> {
        let envelope = match payload.first() {
            Some(0x80..=0x8f | 0xde | 0xdf) => {
                let wire: PackedWire =
                    rmp_serde::from_slice(payload).map_err(EnvelopeError::Msgpack)?;
                if wire.v != VERSION {
                    return Err(EnvelopeError::Version(wire.v));
                }
                if let Some(kind) = &wire.k {
                    return presence(kind, wire.c, wire.i).map(Incoming::Presence);
                }
                Envelope::from_packed(wire)?
            }
            _ if payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => {
                Envelope::decode_json(payload)?
            }
            _ => return Err(EnvelopeError::NotAnEnvelope),
        };
        envelope.checked().map(Incoming::Message)
    }
}

fn presence(
    kind: &str,
    client: Option<String>,
    info: Option<serde_bytes::ByteBuf>,
) -> Result<PresenceEvent, EnvelopeError> {
    let joined = match kind {
        "join" => true,
        "leave" => false,
        _ => return Err(EnvelopeError::BadPresence),
    };
    let client = client
        .filter(|c| !c.is_empty() && c.len() <= MAX_META_LEN)
        .ok_or(EnvelopeError::BadPresence)?;
    let info = info.map_or_else(|| b"null".to_vec(), serde_bytes::ByteBuf::into_vec);
    if serde_json::from_slice::<serde::de::IgnoredAny>(&info).is_err() {
        return Err(EnvelopeError::BadPresence);
    }
    Ok(PresenceEvent {
        joined,
        client,
        info: Bytes::from(info),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_envelope() {
        let e = Envelope::decode(br#"{"data":{"text":"hi"}}"#).unwrap();
        assert_eq!(&e.data[..], br#"{"text":"hi"}"#);
        assert_eq!(e.id, None);
    }

    #[test]
    fn full_json_envelope() {
        let e = Envelope::decode(
            br#" {"v":1,"data":null,"id":"m-1","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","ts":5}"#,
        )
        .unwrap();
        assert_eq!(&e.data[..], b"null");
        assert_eq!(e.id.as_deref(), Some("m-1"));
        assert_eq!(e.ts, Some(5));
        assert!(e.traceparent.is_some());
    }

    #[test]
    fn packed_roundtrip() {
        let e = Envelope {
            data: Bytes::from_static(br#"[1,"x"]"#),
            id: Some("k".into()),
            traceparent: None,
            ts: Some(42),
            node: Some("a".into()),
            position: None,
        };
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn rejects_what_is_not_an_envelope() {
        use EnvelopeError::*;
        let err = |p: &[u8]| Envelope::decode(p).unwrap_err();
        assert!(matches!(err(b"hello"), NotAnEnvelope));
        assert!(matches!(err(b""), NotAnEnvelope));
        assert!(matches!(err(b"[1]"), NotAnEnvelope));
        assert!(matches!(err(b"{\"data\":"), Json(_)));
        assert!(matches!(err(br#"{"text":"hi"}"#), NoData));
        assert!(matches!(err(br#"{"v":2,"data":1}"#), Version(2)));
        assert!(matches!(err(br#"{"data":1,"id":5}"#), Json(_)));
        let long = format!(r#"{{"data":1,"id":"{}"}}"#, "x".repeat(300));
        assert!(matches!(err(long.as_bytes()), TooLong("id")));
        let mut bad = Envelope {
            data: Bytes::from_static(b"{nope"),
            ..Default::default()
        }
        .encode();
        assert!(matches!(err(&bad), DataNotJson));
        bad[0] = 0x81; // a map of one entry: `v` alone
        assert!(matches!(err(&bad), NoData));
        assert!(matches!(err(b"\x81\xa1v"), Msgpack(_)), "truncated");
    }

    /// What `roomcast_publish` (Lua's cmsgpack) writes: the envelope as a MessagePack str.
    #[test]
    fn positioned_wraps_either_form() {
        for inner in [
            br#"{"data":{"t":1},"id":"x"}"#.to_vec(),
            Envelope {
                data: Bytes::from_static(b"[1]"),
                ..Default::default()
            }
            .encode(),
        ] {
            let mut buf = Vec::new();
            rmp::encode::write_map_len(&mut buf, 4).unwrap();
            rmp::encode::write_str(&mut buf, "v").unwrap();
            rmp::encode::write_uint(&mut buf, 1).unwrap();
            rmp::encode::write_str(&mut buf, "o").unwrap();
            rmp::encode::write_uint(&mut buf, 7).unwrap();
            rmp::encode::write_str(&mut buf, "ep").unwrap();
            rmp::encode::write_str(&mut buf, "abc").unwrap();
            rmp::encode::write_str(&mut buf, "e").unwrap();
            rmp::encode::write_str_len(&mut buf, inner.len() as u32).unwrap();
            buf.extend_from_slice(&inner);
            let e = Envelope::decode(&buf).unwrap();
            let position = e.position.unwrap();
            assert_eq!((position.offset, &*position.epoch), (7, "abc"));
        }
    }
}
