//! Publish a message to a roomcast channel from Rust, with the `redis` crate:
//!
//!     cargo run --example publish -- chat:lobby '{"text":"hi"}'
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
    let nodes: i64 = redis::cmd("PUBLISH")
        .arg(format!("{prefix}:{channel}"))
        .arg(envelope.to_string())
        .query_async(&mut conn)
        .await?;
    println!("delivered to {nodes} node(s)");
    Ok(())
}
