//! steadfast: `publish_accepted` in order with a window of pending acknowledgements, and a
//! `subscribe_stream` handle on the subscriber.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use steadfast::{ByteStr, Client, ClientBuilder, Message, QoS, State};

use crate::common::{due, ns_since, put_header, rusage, Measured, Recorder, Scenario};

fn qos(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::AtMostOnce)
}

async fn connect(s: &Scenario, role: &str) -> Result<Client, String> {
    let (client, mut events) = ClientBuilder::from_url(&s.url)
        .map_err(|e| e.to_string())?
        .client_id(format!("sf-{role}-{}", s.run_id))
        .keep_alive(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let state = tokio::time::timeout(
        Duration::from_secs(10),
        client.wait_for_state(|s| matches!(s, State::Connected | State::Failed | State::Dormant)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?;
    if state != State::Connected {
        return Err(format!("could not connect: {state}"));
    }
    Ok(client)
}

pub async fn run(s: &Scenario) -> Result<Measured, String> {
    let sub_client = connect(s, "sub").await?;
    let mut sub = sub_client
        .subscribe_stream(s.filter(), qos(s.qos))
        .await
        .map_err(|e| e.to_string())?;
    let publisher = connect(s, "pub").await?;
    let start = Instant::now();
    let (cpu0, _) = rusage();
    let idle = s.idle;
    let mut rec = Recorder::new(start, s.count);
    let receiver = tokio::spawn(async move {
        while !rec.done() {
            match tokio::time::timeout(idle, sub.recv()).await {
                Ok(Some(m)) => {
                    rec.record(m.payload());
                }
                _ => break,
            }
        }
        rec
    });
    let topic = ByteStr::from(s.topic());
    let mut buf = s.payload_buf();
    let mut window = VecDeque::with_capacity(s.window);
    let began = tokio::time::Instant::now();
    let mut first_ns = None;
    for seq in 0..s.count {
        if let Some(at) = due(began, s.rate, seq) {
            tokio::time::sleep_until(at).await;
        }
        let now = ns_since(start);
        first_ns.get_or_insert(now);
        put_header(&mut buf, seq, now);
        let p = Message::new(topic.clone(), Bytes::copy_from_slice(&buf)).qos(qos(s.qos));
        window.push_back(
            publisher
                .publish_accepted(p)
                .await
                .map_err(|e| e.to_string())?,
        );
        if window.len() >= s.window {
            if let Some(a) = window.pop_front() {
                a.await.map_err(|e| e.to_string())?;
            }
        }
    }
    for a in window {
        a.await.map_err(|e| e.to_string())?;
    }
    let rec = receiver.await.map_err(|e| e.to_string())?;
    let (cpu1, _) = rusage();
    let m = Measured::new(rec, first_ns.unwrap_or(0), cpu1 - cpu0);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = publisher.disconnect().await;
        let _ = sub_client.disconnect().await;
    })
    .await;
    Ok(m)
}
