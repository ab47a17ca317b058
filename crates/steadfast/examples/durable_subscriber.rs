//! A subscriber that resumes its session after `kill -9`: QoS 2 messages are shown exactly once.
//!
//! ```text
//! cargo run -p steadfast --example durable_subscriber -- URL STORE_DIR [FILTER]
//! cargo run -p steadfast --example durable_subscriber -- mqtt://127.0.0.1:1883 /tmp/sub-store 'steadfast/#'
//! ```
//!
//! The first run subscribes; later runs find the subscription (and the client id, and the QoS 2
//! packet ids already received) in the store, resume the broker's session, and resubscribe by
//! themselves if the broker lost it.
use std::time::Duration;

use steadfast::store::{DurableStore, Store};
use steadfast::{ClientBuilder, ClientEvent, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let dir = args
        .next()
        .unwrap_or_else(|| "steadfast-subscriber-store".into());
    let filter = args.next().unwrap_or_else(|| "steadfast/#".into());

    let mut store = DurableStore::open(&dir)?;
    let fresh = store.load("")?.subscriptions.is_empty();
    let (client, mut events) = ClientBuilder::from_url(&url)?
        .client_id("steadfast-durable-subscriber")
        .session_expiry(Duration::from_secs(3600))
        .store(store)
        .build()?;
    if fresh {
        let granted = client.subscribe(filter.as_str(), QoS::ExactlyOnce).await?;
        eprintln!("subscribed to {filter} ({granted:?})");
    }
    while let Some(ev) = events.recv().await {
        match ev {
            ClientEvent::Message(m) => {
                println!("{} {}", m.topic(), String::from_utf8_lossy(m.payload()))
            }
            ClientEvent::Lifecycle { event, .. } => eprintln!("{event:?}"),
            other => eprintln!("{other:?}"),
        }
    }
    Ok(())
}
