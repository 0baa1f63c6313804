//! Client commands in Json: never a panic, and what the node accepts for publishing it
//! can deliver to subscribers of every codec (nothing is dropped later for some of them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::channel::ChannelName;
use roomcast::protocol::{Codec, Command, Push};

fuzz_target!(|data: &[u8]| {
    let Ok(Command::Publish { channel, data, .. }) = Codec::Json.decode(data) else {
        return;
    };
    deliverable(&channel, &data);
});

fn deliverable(channel: &ChannelName, data: &[u8]) {
    let push = Push::Message {
        channel,
        data,
        position: None,
    };
    for codec in [Codec::Json, Codec::Msgpack] {
        assert!(
            codec.encode_push(&push).is_ok(),
            "accepted but not deliverable as {codec:?}"
        );
    }
}
