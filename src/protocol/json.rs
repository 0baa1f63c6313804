//! The JSON codec (`roomcast.v1.json`): payloads of text frames and SSE events.

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::fields::{Field, Fields};
use super::{ErrorCode, Rejection, ServerMsg};
use crate::bus::StreamPosition;
use crate::channel::ChannelName;

/// Every field borrowed as raw JSON, so that a wrong type never hides the `id`:
/// the outer parse fails only on malformed JSON or a non-object.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    op: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    /// `null` is valid data, so presence is tracked apart from the value.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    recover: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    limit: Option<&'a RawValue>,
    #[serde(borrow, default)]
    info: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cursor: Option<&'a RawValue>,
    #[serde(borrow, default)]
    join_leave: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

pub(super) fn decode(payload: &[u8]) -> Result<Fields, Rejection> {
    // serde would also accept a struct as an array of its fields; the protocol does not.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Rejection::new(
            None,
            ErrorCode::BadRequest,
            "not a JSON object",
        ));
    }
    let wire: Wire<'_> = serde_json::from_slice(payload).map_err(|e| {
        Rejection::new(
            None,
            ErrorCode::BadRequest,
            format!("not a JSON object: {e}"),
        )
    })?;
    Ok(Fields {
        id: wire.id.map(|raw| {
            let value: Option<serde_json::Number> = serde_json::from_str(raw.get()).ok();
            value
                .and_then(|n| super::fields::whole(n.as_u64(), n.as_f64()))
                .map_or(Field::WrongType, Field::Ok)
        }),
        op: wire.op.map(typed::<String>),
        channel: wire.channel.map(typed::<String>),
        data: wire
            .data
            .map(|raw| Bytes::copy_from_slice(raw.get().as_bytes())),
        recover: wire.recover.map(typed),
        since: wire.since.map(typed),
        before: wire.before.map(typed),
        limit: wire.limit.map(typed),
        info: wire
            .info
            .map(|raw| Bytes::copy_from_slice(raw.get().as_bytes())),
        cursor: wire.cursor.map(typed),
        join_leave: wire.join_leave.map(typed),
        token: wire.token.map(typed),
    })
}

fn typed<T: serde::de::DeserializeOwned>(raw: &RawValue) -> Field<T> {
    serde_json::from_str(raw.get()).map_or(Field::WrongType, Field::Ok)
}

pub(super) fn encode(msg: &ServerMsg<'_>) -> Vec<u8> {
    // Serialising these plain structs into a Vec cannot fail.
    serde_json::to_vec(msg).unwrap_or_default()
}

/// `{"op":"message","channel":…,"data":…}` with `data` spliced in verbatim: it was
/// validated when it entered the node, so it is never parsed again on the fan-out path.
/// On channels with history, `"offset":…,"epoch":…` follow.
pub(super) fn encode_message(
    channel: &ChannelName,
    data: &[u8],
    position: Option<&StreamPosition>,
) -> Vec<u8> {
    let channel = channel.as_str();
    let mut out = Vec::with_capacity(80 + channel.len() + data.len());
    out.extend_from_slice(br#"{"op":"message","channel":""#);
    // Channel names are restricted to characters that need no JSON escaping.
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(br#"","data":"#);
    out.extend_from_slice(data);
    if let Some(position) = position {
        out.extend_from_slice(br#","offset":"#);
        out.extend_from_slice(position.offset.to_string().as_bytes());
        out.extend_from_slice(br#","epoch":"#);
        // Epochs come from Redis: escaped like any string, never trusted to need none.
        let _ = serde_json::to_writer(&mut out, &*position.epoch);
    }
    out.push(b'}');
    out
}
