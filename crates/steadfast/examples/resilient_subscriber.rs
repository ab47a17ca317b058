//! A subscriber that stays connected.
//!
//! The classic Paho C / Python subscriber connects, subscribes again in `on_connect` after every
//! reconnect, prints in `on_message`, and runs `loop_forever` with reconnect handling of its own.
//! With steadfast there is no reconnect code: subscribe once, and the client restores the
//! subscription whenever the broker lost it; the lifecycle events say what happened.
//!
//! ```text
//! cargo run --example resilient_subscriber -- mqtt://127.0.0.1:1883 'sensors/#'
//! ```

use steadfast::{ClientBuilder, ClientEvent, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let filter = args.next().unwrap_or_else(|| "sensors/#".into());

    let (client, mut events) = ClientBuilder::from_url(&url)?.build()?;
    // Registered at once, sent as soon as the client is connected, restored after reconnects.
    let c = client.clone();
    tokio::spawn(async move {
        match c.subscribe(filter.as_str(), QoS::AtLeastOnce).await {
            Ok(granted) => eprintln!("subscribed to {filter} ({granted:?})"),
            Err(e) => eprintln!("subscription to {filter} refused: {e}"),
        }
    });

    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(ClientEvent::Message(m)) => {
                    println!("{} {}", m.topic(), String::from_utf8_lossy(m.payload()));
                }
                Some(ClientEvent::Lifecycle { event, .. }) => eprintln!("[{}] {event:?}", event.name()),
                Some(other) => eprintln!("{other:?}"), // e.g. Lagged: events were not read in time
                None => break, // the client has closed
            },
            _ = tokio::signal::ctrl_c() => {
                client.disconnect().await?; // graceful: DISCONNECT, no will
            }
        }
    }
    Ok(())
}
