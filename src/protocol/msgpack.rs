//! The MessagePack codec (`roomcast.v1.msgpack`): payloads of binary frames: the JSON protocol's
//! fields, as a MessagePack map. `data` must be JSON-compatible (see PROTOCOL.md).

use bytes::Bytes;
use serde::{Deserialize, Deserializer};

use super::fields::{Field, Fields};
use super::{DataError, ErrorCode, Rejection, ServerMsg};
use crate::bus::StreamPosition;
use crate::channel::ChannelName;

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    id: Option<rmpv::Value>,
    #[serde(default)]
    op: Option<rmpv::Value>,
    #[serde(default)]
    channel: Option<rmpv::Value>,
    #[serde(default, deserialize_with = "present")]
    data: Option<rmpv::Value>,
    #[serde(default)]
    recover: Option<rmpv::Value>,
    #[serde(default)]
    since: Option<rmpv::Value>,
    #[serde(default)]
    before: Option<rmpv::Value>,
    #[serde(default)]
    limit: Option<rmpv::Value>,
    #[serde(default)]
    info: Option<rmpv::Value>,
    #[serde(default)]
    cursor: Option<rmpv::Value>,
    #[serde(default)]
    join_leave: Option<rmpv::Value>,
    #[serde(default)]
    token: Option<rmpv::Value>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<rmpv::Value>, D::Error> {
    rmpv::Value::deserialize(d).map(Some)
}

pub(super) fn decode(payload: &[u8]) -> Result<Fields, Rejection> {
    // rmp-serde would also accept a struct as an array of its fields; the protocol does not.
    if !matches!(payload.first(), Some(0x80..=0x8f | 0xde | 0xdf)) {
        return Err(Rejection::new(
            None,
            ErrorCode::BadRequest,
            "not a MessagePack map",
        ));
    }
    let wire: Wire = rmp_serde::from_slice(payload).map_err(|e| {
        Rejection::new(
            None,
            ErrorCode::BadRequest,
            format!("not a MessagePack map: {e}"),
        )
    })?;
    let uint = |v: rmpv::Value| v.as_u64().map_or(Field::WrongType, Field::Ok);
    let id = wire
        .id
        .map(|v| super::fields::whole(v.as_u64(), v.as_f64()).map_or(Field::WrongType, Field::Ok));
    let string = |v: rmpv::Value| match v {
        rmpv::Value::String(s) => s.into_str().map_or(Field::WrongType, Field::Ok),
        _ => Field::WrongType,
    };
    let known_id = match &id {
        Some(Field::Ok(id)) => Some(*id),
        _ => None,
    };
    let json = |value: Option<rmpv::Value>| {
        value
            .map(|v| to_json(&v))
            .transpose()
            .map_err(|e| Rejection::new(known_id, ErrorCode::BadRequest, e.to_string()))
    };
    let data = json(wire.data)?;
    let info = json(wire.info)?;
    Ok(Fields {
        id,
        op: wire.op.map(string),
        channel: wire.channel.map(string),
        data,
        recover: wire
            .recover
            .map(|v| rmpv::ext::from_value(v).map_or(Field::WrongType, Field::Ok)),
        since: wire.since.map(uint),
        before: wire.before.map(uint),
        limit: wire.limit.map(uint),
        info,
        cursor: wire.cursor.map(string),
        join_leave: wire
            .join_leave
            .map(|v| v.as_bool().map_or(Field::WrongType, Field::Ok)),
        token: wire.token.map(string),
    })
}

/// The JSON form of MessagePack data, refused unless every codec can carry it: the node
/// transcodes it for MessagePack subscribers through a JSON reader, whose nesting limit
/// (128) is then the protocol's, whatever codec the data came in.
fn to_json(value: &rmpv::Value) -> Result<Bytes, DataError> {
    if let Some(ext) = find_ext(value) {
        return Err(DataError::Extension(ext));
    }
    let json = serde_json::to_vec(value).map_err(DataError::NotJson)?;
    if !super::deliverable(&json) {
        return Err(DataError::TooDeep);
    }
    Ok(Bytes::from(json))
}

/// The type of the first extension value in `value`, searched breadth-first without
/// recursion (the value may be nested deeper than a stack allows).
fn find_ext(value: &rmpv::Value) -> Option<i8> {
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            rmpv::Value::Ext(kind, _) => return Some(*kind),
            rmpv::Value::Array(items) => pending.extend(items),
            rmpv::Value::Map(entries) => pending.extend(entries.iter().flat_map(|(k, v)| [k, v])),
            _ => {}
        }
    }
    None
}

pub(super) fn encode(msg: &ServerMsg<'_>) -> Vec<u8> {
    // Serialising these plain structs into a Vec cannot fail.
    rmp_serde::to_vec_named(msg).unwrap_or_default()
}

/// The `message` push: a map whose `data` is transcoded from the JSON payload, with
/// `offset` and `epoch` on channels with history.
pub(super) fn encode_message(
    channel: &ChannelName,
    data: &[u8],
    position: Option<&StreamPosition>,
) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(48 + channel.as_str().len() + data.len());
    let bad = |e: Box<dyn std::error::Error + Send + Sync>| DataError::NotMsgpack(e);
    let entries = if position.is_some() { 5 } else { 3 };
    rmp::encode::write_map_len(&mut out, entries).map_err(|e| bad(e.into()))?;
    for (key, value) in [("op", "message"), ("channel", channel.as_str())] {
        rmp::encode::write_str(&mut out, key).map_err(|e| bad(e.into()))?;
        rmp::encode::write_str(&mut out, value).map_err(|e| bad(e.into()))?;
    }
    rmp::encode::write_str(&mut out, "data").map_err(|e| bad(e.into()))?;
    let mut de = serde_json::Deserializer::from_slice(data);
    let mut ser = rmp_serde::Serializer::new(&mut out);
    serde_transcode::transcode(&mut de, &mut ser).map_err(|e| bad(e.into()))?;
    if let Some(position) = position {
        rmp::encode::write_str(&mut out, "offset").map_err(|e| bad(e.into()))?;
        rmp::encode::write_uint(&mut out, position.offset).map_err(|e| bad(e.into()))?;
        rmp::encode::write_str(&mut out, "epoch").map_err(|e| bad(e.into()))?;
        rmp::encode::write_str(&mut out, &position.epoch).map_err(|e| bad(e.into()))?;
    }
    Ok(out)
}
