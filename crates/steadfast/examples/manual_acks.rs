//! A worker that acknowledges each job only once it is done: with a durable store, a QoS 2 job
//! is processed once even when the worker is killed mid-job (it comes again after the restart),
//! and a job it acknowledged never comes again.
//!
//! ```text
//! cargo run -p steadfast --example manual_acks -- URL STORE_DIR [FILTER]
//! cargo run -p steadfast --example manual_acks -- mqtt://127.0.0.1:1883 /tmp/worker-store 'jobs/#'
//! mosquitto_pub -q 2 -t jobs/1 -m 'resize image 42'
//! ```
//!
//! See docs/acks.md for the exact guarantee.
use std::time::Duration;

use steadfast::store::{DurableStore, Store};
use steadfast::{ClientBuilder, ClientError, ClientEvent, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let dir = args
        .next()
        .unwrap_or_else(|| "steadfast-worker-store".into());
    let filter = args.next().unwrap_or_else(|| "jobs/#".into());

    let mut store = DurableStore::open(&dir)?;
    let fresh = store.load("")?.subscriptions.is_empty();
    let (client, mut events) = ClientBuilder::from_url(&url)?
        .client_id("steadfast-worker")
        .session_expiry(Duration::from_secs(3600))
        .manual_acks(true)
        .store(store)
        .build()?;
    if fresh {
        client.subscribe(filter.as_str(), QoS::ExactlyOnce).await?;
    }
    while let Some(ev) = events.recv().await {
        match ev {
            ClientEvent::Message(job) => {
                // The work: a kill before the ack below resolves brings the job back.
                println!("{} {}", job.topic(), String::from_utf8_lossy(job.payload()));
                tokio::time::sleep(Duration::from_millis(500)).await;
                match client.ack(&job).await {
                    Ok(()) => {}
                    // The connection dropped meanwhile: the broker sends the job again.
                    Err(ClientError::Ack(e)) => eprintln!("job {}: {e}", job.topic()),
                    Err(e) => return Err(e.into()),
                }
            }
            ClientEvent::Lifecycle { event, .. } => eprintln!("{event:?}"),
            other => eprintln!("{other:?}"),
        }
    }
    Ok(())
}
