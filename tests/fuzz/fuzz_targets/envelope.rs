//! What arrives on a roomcast channel from Redis (backend JSON, node MessagePack, the
//! positioned and presence forms): never a panic; an accepted message is deliverable to
//! every codec and survives the node-to-node encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::bus::envelope::{Envelope, Incoming};
use roomcast::channel::ChannelName;
use roomcast::protocol::{Codec, Push};

fuzz_target!(|data: &[u8]| {
    let Ok(Incoming::Message(envelope)) = Incoming::decode(data) else {
        return;
    };
    let channel = ChannelName::parse("fuzz").expect("a valid name");
    let push = Push::Message {
        channel: &channel,
        data: &envelope.data,
        position: envelope.position.as_ref(),
    };
    for codec in [Codec::Json, Codec::Msgpack] {
        assert!(
            codec.encode_push(&push).is_ok(),
            "accepted but not deliverable as {codec:?}"
        );
    }
    let again = Envelope::decode(&envelope.encode()).expect("nodes read what nodes write");
    assert_eq!(again.data, envelope.data);
});
