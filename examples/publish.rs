//! Publish a message to a roomcast channel from Rust, with the `redis` crate:
//!
//!     cargo run --example publish -- chat:lobby '{"text":"hi"}'
//!
//! One command: FCALL of `roomcast_publish` keeps the message in the channel's history (so
//! reconnecting clients recover it) and returns its offset and epoch.
//!
//! REDIS_URL (default redis://127.0.0.1:6379) and ROOMCAST_REDIS__PREFIX (default roomcast,
//! the node setting `redis.prefix`) apply.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(channel), Some(data)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: publish CHANNEL JSON_DATA");
    };
    let data: serde_json::Value = serde_json::from_str(&data).context("JSON_DATA is not JSON")?;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = std::env::var("ROOMCAST_REDIS__PREFIX").unwrap_or_else(|_| "roomcast".into());
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let envelope = serde_json::json!({ "data": data });
    let (offset, epoch): (u64, String) = redis::cmd("FCALL")
        .arg("roomcast_publish")
        .arg(1)
        .arg(format!("{prefix}:{channel}"))
        .arg(envelope.to_string())
        .query_async(&mut conn)
        .await?;
    println!("published at offset {offset} of epoch {epoch}");
    Ok(())
}
