//! A firmware-style loop without an async runtime: read a sensor, publish it at QoS 1, look for
//! commands, sleep. The client stays connected (keep-alive, reconnects, resubscription) while
//! the loop sleeps.
//!
//! ```sh
//! cargo run -p steadfast --example blocking -- mqtt://127.0.0.1:1883
//! ```
use std::time::Duration;

use steadfast::blocking::RecvTimeoutError;
use steadfast::{ClientBuilder, ClientEvent, Message, QoS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let (client, mut events) = ClientBuilder::from_url(&url)?.build_blocking()?;
    client.subscribe("example/commands/#", QoS::AtLeastOnce)?;
    for n in 0..10u32 {
        let reading = format!("{:.1}", 20.0 + f64::from(n) / 10.0);
        client.send(Message::new("example/sensors/temp", reading).qos(QoS::AtLeastOnce))?;
        // Wait for commands up to a second; lifecycle events are printed.
        loop {
            match events.recv_timeout(Duration::from_secs(1)) {
                Ok(ClientEvent::Message(m)) => {
                    println!("command on {}: {:?}", m.topic(), m.payload())
                }
                Ok(other) => eprintln!("{other:?}"),
                Err(RecvTimeoutError::Timeout) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    client.disconnect()?;
    Ok(())
}
