//! Unit tests of the codecs: every op, every decoding error, both codecs' shared fields.

use super::*;

fn json(s: &str) -> Result<Command, Rejection> {
    Codec::Json.decode(s.as_bytes())
}

fn code(r: Result<Command, Rejection>) -> (Option<u64>, ErrorCode) {
    let r = r.expect_err("expected a rejection");
    (r.id, r.code)
}

#[test]
fn decodes_every_op() {
    let ch = ChannelName::parse("chat:lobby").unwrap();
    assert_eq!(
        json(r#"{"id":1,"op":"subscribe","channel":"chat:lobby"}"#),
        Ok(Command::Subscribe {
            id: 1,
            channel: ch.clone(),
            recover: None,
            info: None,
            join_leave: false,
            token: None,
        })
    );
    assert_eq!(
        json(r#"{"id":2,"op":"unsubscribe","channel":"chat:lobby"}"#),
        Ok(Command::Unsubscribe {
            id: 2,
            channel: ch.clone()
        })
    );
    assert_eq!(
        json(r#"{"id":3,"op":"publish","channel":"chat:lobby","data":{"a":[1,2]}}"#),
        Ok(Command::Publish {
            id: 3,
            channel: ch,
            data: Bytes::from_static(br#"{"a":[1,2]}"#)
        })
    );
    assert_eq!(json(r#"{"id":4,"op":"ping"}"#), Ok(Command::Ping { id: 4 }));
}

#[test]
fn null_data_is_data() {
    let cmd = json(r#"{"id":1,"op":"publish","channel":"c","data":null}"#).unwrap();
    assert!(matches!(cmd, Command::Publish { data, .. } if &data[..] == b"null"));
}

#[test]
fn errors_keep_the_id_when_readable() {
    assert_eq!(code(json("not json")), (None, ErrorCode::BadRequest));
    assert_eq!(code(json("[1,2]")), (None, ErrorCode::BadRequest));
    assert_eq!(
        code(json(r#"{"op":"ping"}"#)),
        (None, ErrorCode::BadRequest)
    );
    assert_eq!(
        code(json(r#"{"id":"x","op":"ping"}"#)),
        (None, ErrorCode::BadRequest)
    );
    assert_eq!(
        code(json(r#"{"id":-1,"op":"ping"}"#)),
        (None, ErrorCode::BadRequest)
    );
    assert_eq!(
        code(json(r#"{"id":9007199254740992,"op":"ping"}"#)),
        (None, ErrorCode::BadRequest)
    );
    assert_eq!(code(json(r#"{"id":5}"#)), (Some(5), ErrorCode::BadRequest));
    assert_eq!(
        code(json(r#"{"id":5,"op":7}"#)),
        (Some(5), ErrorCode::BadRequest)
    );
    assert_eq!(
        code(json(r#"{"id":5,"op":"dance"}"#)),
        (Some(5), ErrorCode::UnknownOp)
    );
    assert_eq!(
        code(json(r#"{"id":5,"op":"subscribe"}"#)),
        (Some(5), ErrorCode::BadRequest)
    );
    assert_eq!(
        code(json(r#"{"id":5,"op":"subscribe","channel":3}"#)),
        (Some(5), ErrorCode::BadRequest)
    );
    assert_eq!(
        code(json(r#"{"id":5,"op":"subscribe","channel":"a b"}"#)),
        (Some(5), ErrorCode::BadChannel)
    );
    assert_eq!(
        code(json(r#"{"id":5,"op":"publish","channel":"c"}"#)),
        (Some(5), ErrorCode::BadRequest)
    );
}

#[test]
fn msgpack_roundtrips_the_same_fields() {
    let mut buf = Vec::new();
    rmp::encode::write_map_len(&mut buf, 4).unwrap();
    for (k, v) in [("op", "publish"), ("channel", "chat:x")] {
        rmp::encode::write_str(&mut buf, k).unwrap();
        rmp::encode::write_str(&mut buf, v).unwrap();
    }
    rmp::encode::write_str(&mut buf, "id").unwrap();
    rmp::encode::write_uint(&mut buf, 7).unwrap();
    rmp::encode::write_str(&mut buf, "data").unwrap();
    rmp::encode::write_array_len(&mut buf, 2).unwrap();
    rmp::encode::write_str(&mut buf, "hi").unwrap();
    rmp::encode::write_nil(&mut buf).unwrap();
    let cmd = Codec::Msgpack.decode(&buf).unwrap();
    let Command::Publish { id, data, .. } = cmd else {
        panic!("{cmd:?}")
    };
    assert_eq!(id, 7);
    assert_eq!(&data[..], br#"["hi",null]"#);

    let channel = ChannelName::parse("chat:x").unwrap();
    let payload = Codec::Msgpack
        .encode_push(&Push::Message {
            channel: &channel,
            data: &data,
            position: None,
        })
        .unwrap();
    let value: rmpv::Value = rmp_serde::from_slice(&payload).unwrap();
    assert_eq!(value["op"].as_str(), Some("message"));
    assert_eq!(value["data"][0].as_str(), Some("hi"));
    assert!(value["data"][1].is_nil());
}

#[test]
fn json_message_splices_data_verbatim() {
    let channel = ChannelName::parse("chat:x").unwrap();
    let payload = Codec::Json
        .encode_push(&Push::Message {
            channel: &channel,
            data: br#"{"t":"hi"}"#,
            position: None,
        })
        .unwrap();
    assert_eq!(
        &payload[..],
        br#"{"op":"message","channel":"chat:x","data":{"t":"hi"}}"#
    );
}

#[test]
fn negotiates_first_known_subprotocol() {
    assert_eq!(Codec::negotiate(std::iter::empty()), Ok(None));
    assert_eq!(
        Codec::negotiate(["x", "roomcast.v1.msgpack", "roomcast.v1.json"].into_iter()),
        Ok(Some(Codec::Msgpack))
    );
    assert_eq!(Codec::negotiate(["mqtt"].into_iter()), Err(()));
}

#[test]
fn ok_reply_is_the_id_alone_in_both_codecs() {
    let ok = ServerMsg::Ok { id: 7, data: None };
    assert_eq!(Codec::Json.encode(&ok), br#"{"op":"ok","id":7}"#);
    let value: rmpv::Value = rmp_serde::from_slice(&Codec::Msgpack.encode(&ok)).unwrap();
    assert_eq!(value["op"].as_str(), Some("ok"));
    assert_eq!(value["id"].as_u64(), Some(7));
}

#[test]
fn decodes_recover_and_history() {
    let ch = ChannelName::parse("chat:x").unwrap();
    assert_eq!(
        json(r#"{"id":1,"op":"subscribe","channel":"chat:x","recover":{"offset":7,"epoch":"e1"}}"#),
        Ok(Command::Subscribe {
            id: 1,
            channel: ch.clone(),
            recover: Some(Recover {
                offset: 7,
                epoch: "e1".into()
            }),
            info: None,
            join_leave: false,
            token: None,
        })
    );
    assert_eq!(
        json(r#"{"id":2,"op":"history","channel":"chat:x","since":3,"limit":10}"#),
        Ok(Command::History {
            id: 2,
            channel: ch,
            since: Some(3),
            before: None,
            limit: Some(10),
        })
    );
    for bad in [
        r#"{"id":3,"op":"subscribe","channel":"chat:x","recover":{"offset":-1,"epoch":"e"}}"#,
        r#"{"id":3,"op":"subscribe","channel":"chat:x","recover":{"offset":1,"epoch":""}}"#,
        r#"{"id":3,"op":"subscribe","channel":"chat:x","recover":7}"#,
        r#"{"id":3,"op":"history","channel":"chat:x","since":1,"before":2}"#,
        r#"{"id":3,"op":"history","channel":"chat:x","limit":"ten"}"#,
    ] {
        assert_eq!(code(json(bad)), (Some(3), ErrorCode::BadRequest), "{bad}");
    }
}

#[test]
fn positioned_message_in_both_codecs() {
    let channel = ChannelName::parse("chat:x").unwrap();
    let position = crate::bus::StreamPosition {
        offset: 9,
        epoch: "e\"1".into(),
    };
    let push = Push::Message {
        channel: &channel,
        data: b"[1]",
        position: Some(&position),
    };
    let json_payload = Codec::Json.encode_push(&push).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json_payload).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"op": "message", "channel": "chat:x", "data": [1], "offset": 9, "epoch": "e\"1"})
    );
    let packed = Codec::Msgpack.encode_push(&push).unwrap();
    let value: rmpv::Value = rmp_serde::from_slice(&packed).unwrap();
    assert_eq!(value["offset"].as_u64(), Some(9));
    assert_eq!(value["epoch"].as_str(), Some("e\"1"));
}

#[test]
fn history_reply_carries_data_in_both_codecs() {
    let reply = ServerMsg::Ok {
        id: 4,
        data: Some(ReplyData::History {
            offset: 2,
            epoch: "e".into(),
            messages: vec![HistoryItem {
                offset: 2,
                data: JsonText(Bytes::from_static(br#"{"t":"hi"}"#)),
            }],
        }),
    };
    let value: serde_json::Value = serde_json::from_slice(&Codec::Json.encode(&reply)).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"op": "ok", "id": 4, "offset": 2, "epoch": "e", "messages": [{"offset": 2, "data": {"t": "hi"}}]})
    );
    let value: rmpv::Value = rmp_serde::from_slice(&Codec::Msgpack.encode(&reply)).unwrap();
    assert_eq!(value["messages"][0]["data"]["t"].as_str(), Some("hi"));
}

/// What one codec accepts, every codec can deliver: MessagePack data that JSON cannot carry
/// (nested deeper than 128, extension types) is refused at publish.
#[test]
fn msgpack_data_every_codec_cannot_carry_is_refused() {
    let publish = |data: &[u8]| {
        let mut buf = Vec::new();
        rmp::encode::write_map_len(&mut buf, 4).unwrap();
        for (k, v) in [("op", "publish"), ("channel", "chat:x")] {
            rmp::encode::write_str(&mut buf, k).unwrap();
            rmp::encode::write_str(&mut buf, v).unwrap();
        }
        rmp::encode::write_str(&mut buf, "id").unwrap();
        rmp::encode::write_uint(&mut buf, 9).unwrap();
        rmp::encode::write_str(&mut buf, "data").unwrap();
        buf.extend_from_slice(data);
        Codec::Msgpack.decode(&buf)
    };
    let mut deep = vec![0x91u8; 200];
    deep.push(0xc0);
    assert_eq!(code(publish(&deep)), (Some(9), ErrorCode::BadRequest));
    assert_eq!(
        code(publish(&[0xd4, 0x01, 0x02])),
        (Some(9), ErrorCode::BadRequest)
    );
    let mut fine = vec![0x91u8; 100];
    fine.push(0xc0);
    assert!(publish(&fine).is_ok());
}

#[test]
fn json_data_deeper_than_every_codec_carries_is_refused() {
    let deep = format!(
        r#"{{"id":3,"op":"publish","channel":"chat:x","data":{}{}}}"#,
        "[".repeat(128),
        "]".repeat(128)
    );
    assert_eq!(code(json(&deep)), (Some(3), ErrorCode::BadRequest));
    let ok = format!(
        r#"{{"id":3,"op":"publish","channel":"chat:x","data":{}"[[{{"{}}}"#,
        "[".repeat(127),
        "]".repeat(127)
    );
    assert!(json(&ok).is_ok(), "brackets inside strings do not count");
    assert!(deliverable(br#"{"a":"\"[[[["}"#));
}

/// Data every codec can carry: UTF-8, finite numbers, whole surrogate pairs.
#[test]
fn only_data_every_codec_carries_is_deliverable() {
    for number in ["1e400", "-1e309", &"9".repeat(400)] {
        let publish = format!(r#"{{"id":4,"op":"publish","channel":"chat:x","data":[{number}]}}"#);
        assert_eq!(
            code(json(&publish)),
            (Some(4), ErrorCode::BadRequest),
            "{number}"
        );
    }
    assert!(deliverable(
        b"[1e-400, -0.5e10, 18446744073709551615, 1E+2]"
    ));
    assert!(!deliverable(b"{\"d\x9f\x85a\":[0]}"), "not UTF-8");
    assert!(!deliverable(br#"["\uDDDD"]"#), "a lone low surrogate");
    assert!(!deliverable(br#"["\uD83D"]"#), "a high surrogate alone");
    assert!(
        !deliverable(br#"["\uD83D\u0041"]"#),
        "a high surrogate, then no low one"
    );
    assert!(
        deliverable(br#"["\uD83D\uDE00", "\u00e9", "\\uDDDD"]"#),
        "a pair, a plain escape, an escaped backslash"
    );
    let lone = r#"{"id":5,"op":"publish","channel":"chat:x","data":"\uDDDD"}"#;
    assert_eq!(code(json(lone)), (Some(5), ErrorCode::BadRequest));
}

#[test]
fn control_characters_in_strings_are_refused_or_deliverable() {
    for raw in ["\t", "\u{1}", "\n"] {
        let publish = format!(r#"{{"id":6,"op":"publish","channel":"chat:x","data":"a{raw}b"}}"#);
        if let Ok(Command::Publish { channel, data, .. }) = json(&publish) {
            let push = Push::Message {
                channel: &channel,
                data: &data,
                position: None,
            };
            assert!(
                Codec::Msgpack.encode_push(&push).is_ok(),
                "{raw:?} accepted but not deliverable"
            );
        }
    }
}

#[test]
fn decodes_the_auth_ops_and_a_channel_token() {
    assert_eq!(
        json(r#"{"id":1,"op":"connect","token":"a.b.c"}"#),
        Ok(Command::Connect {
            id: 1,
            token: "a.b.c".into()
        })
    );
    assert_eq!(
        json(r#"{"id":2,"op":"refresh","token":"d.e.f"}"#),
        Ok(Command::Refresh {
            id: 2,
            token: "d.e.f".into()
        })
    );
    let missing = json(r#"{"id":3,"op":"connect"}"#).unwrap_err();
    assert_eq!((missing.id, missing.code), (Some(3), ErrorCode::BadRequest));
    let wrong = json(r#"{"id":4,"op":"refresh","token":5}"#).unwrap_err();
    assert_eq!(wrong.message, "`token` must be a string");
    let long = format!(
        r#"{{"id":5,"op":"connect","token":"{}"}}"#,
        "x".repeat(8193)
    );
    assert_eq!(json(&long).unwrap_err().code, ErrorCode::BadRequest);
    let Ok(Command::Subscribe { token, .. }) =
        json(r#"{"id":6,"op":"subscribe","channel":"secret:a","token":"t"}"#)
    else {
        panic!("subscribe with a token did not decode");
    };
    assert_eq!(token.as_deref(), Some("t"));
}

#[test]
fn bearer_entries_are_never_chosen_as_the_protocol() {
    let offered = ["roomcast.bearer.abc", "roomcast.v1.msgpack"];
    assert_eq!(
        Codec::negotiate(offered.into_iter()),
        Ok(Some(Codec::Msgpack))
    );
    assert_eq!(
        Codec::negotiate(["roomcast.bearer.abc"].into_iter()),
        Ok(None)
    );
}

#[test]
fn a_whole_number_written_as_a_float_is_an_id() {
    assert_eq!(
        json(r#"{"id":7.0,"op":"ping"}"#),
        Ok(Command::Ping { id: 7 })
    );
    assert_eq!(
        json(r#"{"id":7.5,"op":"ping"}"#).unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        json(r#"{"id":-1.0,"op":"ping"}"#).unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        json(r#"{"id":1e300,"op":"ping"}"#).unwrap_err().code,
        ErrorCode::BadRequest
    );
}
