//! A QoS 1 publisher of a numbered sequence that survives outages.
//!
//! Each message is handed to the client at once; while the broker is unreachable the client
//! keeps it in its offline queue and sends it after the reconnect, so the sequence goes on
//! through an outage. Each acknowledgement (PUBACK) is printed as it arrives, and so is every
//! lifecycle event (connection lost, reconnecting with its delay, connected, ...).
//!
//! ```text
//! cargo run --example qos1_publisher -- mqtt://127.0.0.1:1883 1000
//! ```

use std::time::{Duration, Instant};

use steadfast::Message;
use steadfast::{ClientBuilder, ClientEvent, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let count: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1000);
    let topic = "steadfast/demo/sequence";

    let (client, mut events) = ClientBuilder::from_url(&url)?.build()?;
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let ClientEvent::Lifecycle { event, .. } = event {
                eprintln!("[{}] {event:?}", event.name());
            }
        }
    });

    let started = Instant::now();
    let mut acks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    for n in 1..=count {
        tick.tick().await;
        let c = client.clone();
        // Not awaited here: the sequence keeps its pace while disconnected (the offline queue
        // holds up to 10,000 messages by default, then publishing waits for room).
        acks.push(tokio::spawn(async move {
            match c
                .send(Message::new(topic, n.to_string()).qos(QoS::AtLeastOnce))
                .await
            {
                Ok(outcome) => println!("#{n} acknowledged ({})", outcome.reason),
                Err(e) => println!("#{n} failed: {e}"),
            }
        }));
    }
    for ack in acks {
        ack.await?;
    }
    println!("{count} messages acknowledged in {:?}", started.elapsed());
    client.disconnect().await?;
    Ok(())
}
