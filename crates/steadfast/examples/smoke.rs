//! Quick manual check: subscribe, publish at QoS 0/1/2, print events.
use std::time::Duration;
use steadfast::Message;
use steadfast::{ClientBuilder, ClientEvent, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let (client, mut events) = ClientBuilder::from_url(&url)?
        .keep_alive(Duration::from_secs(5))
        .build()?;
    let c = client.clone();
    tokio::spawn(async move {
        println!(
            "granted {:?}",
            c.subscribe("steadfast/smoke/#", QoS::ExactlyOnce).await
        );
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            println!(
                "publish {:?} -> {:?}",
                q,
                c.send(Message::new("steadfast/smoke/a", format!("hello {q:?}")).qos(q))
                    .await
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.disconnect().await.ok();
    });
    while let Some(ev) = events.recv().await {
        match ev {
            ClientEvent::Message(m) => {
                println!("message {} {:?} {:?}", m.topic(), m.qos(), m.payload())
            }
            ClientEvent::Lifecycle { event, .. } => println!("event {event:?}"),
            other => println!("{other:?}"),
        }
    }
    Ok(())
}
