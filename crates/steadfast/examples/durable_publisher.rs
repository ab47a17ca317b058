//! A publisher whose accepted messages survive `kill -9` and reboots.
//!
//! ```text
//! cargo run -p steadfast --example durable_publisher -- URL STORE_DIR [COUNT]
//! cargo run -p steadfast --example durable_publisher -- mqtt://127.0.0.1:1883 /tmp/pub-store 1000
//! ```
//!
//! It publishes COUNT numbered QoS 1 messages on `steadfast/durable` and prints `accepted N`
//! as soon as message N is on disk. Kill it at any moment and start it again with the same
//! store: whatever was accepted and not yet acknowledged goes out first (the numbering starts
//! again at 0, so numbers that were accepted before the kill appear twice on the wire).
use std::time::Duration;

use steadfast::store::DurableStore;
use steadfast::{ClientBuilder, Message, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let dir = args
        .next()
        .unwrap_or_else(|| "steadfast-publisher-store".into());
    let count: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);

    let store = DurableStore::open(&dir)?;
    let (client, mut events) = ClientBuilder::from_url(&url)?
        .client_id("steadfast-durable-publisher")
        .session_expiry(Duration::from_secs(3600))
        .store(store)
        .build()?;
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            eprintln!("{ev:?}");
        }
    });
    let mut acks = Vec::new();
    for n in 0..count {
        let msg = Message::new("steadfast/durable", n.to_string()).qos(QoS::AtLeastOnce);
        acks.push(client.publish_accepted(msg).await?);
        println!("accepted {n}");
    }
    for ack in acks {
        ack.await?;
    }
    println!("all {count} acknowledged");
    client.disconnect().await?;
    Ok(())
}
