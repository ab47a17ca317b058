//! mqtt5 (crates.io `mqtt5`, MQTT 5): `publish_with_options` futures (each resolves on
//! PUBACK / PUBCOMP, or once written at QoS 0) kept in a window, and a subscribe callback.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use mqtt5::{ConnectOptions, MqttClient, PublishOptions, QoS, SubscribeOptions};
use tokio::sync::Notify;

use crate::common::{due, ns_since, put_header, rusage, Measured, Recorder, Scenario};

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

async fn connect(s: &Scenario, role: &str) -> Result<MqttClient, String> {
    let opts = ConnectOptions::new(format!("m5-{role}-{}", s.run_id))
        .with_clean_start(true)
        .with_keep_alive(Duration::from_secs(60));
    let client = MqttClient::with_options(opts);
    tokio::time::timeout(Duration::from_secs(10), client.connect(&s.url))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(client)
}

/// Keeps the pending publishes moving while waiting for the next slot.
async fn wait_until<F, T, E>(
    window: &mut FuturesUnordered<F>,
    at: tokio::time::Instant,
) -> Result<(), String>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let sleep = tokio::time::sleep_until(at);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return Ok(()),
            Some(r) = window.next(), if !window.is_empty() => {
                r.map_err(|e| e.to_string())?;
            }
        }
    }
}

pub async fn run(s: &Scenario) -> Result<Measured, String> {
    let sub = connect(s, "sub").await?;
    let start = Instant::now();
    let rec = Arc::new(Mutex::new(Recorder::new(start, s.count)));
    let done = Arc::new(Notify::new());
    let (r, d) = (rec.clone(), done.clone());
    let sub_opts = SubscribeOptions {
        qos: qos(s.qos),
        ..Default::default()
    };
    sub.subscribe_with_options(s.filter(), sub_opts, move |msg| {
        let mut rec = r.lock().unwrap_or_else(|e| e.into_inner());
        if rec.record(&msg.payload) {
            d.notify_one();
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    let publisher = connect(s, "pub").await?;

    let (cpu0, _) = rusage();
    let topic = s.topic();
    let mut buf = s.payload_buf();
    let began = tokio::time::Instant::now();
    let mut first_ns = None;
    let mut window = FuturesUnordered::new();
    let pub_opts = PublishOptions {
        qos: qos(s.qos),
        ..Default::default()
    };
    for seq in 0..s.count {
        if let Some(at) = due(began, s.rate, seq) {
            wait_until(&mut window, at).await?;
        }
        let now = ns_since(start);
        first_ns.get_or_insert(now);
        put_header(&mut buf, seq, now);
        window.push(publisher.publish_with_options(topic.as_str(), buf.clone(), pub_opts.clone()));
        while window.len() >= s.window {
            if let Some(r) = window.next().await {
                r.map_err(|e| e.to_string())?;
            }
        }
        if s.rate <= 0.0 && window.len() > 1 {
            // Let the window make progress (the futures only run when polled).
            while let Some(Some(r)) = futures_util::FutureExt::now_or_never(window.next()) {
                r.map_err(|e| e.to_string())?;
            }
        }
    }
    while let Some(r) = window.next().await {
        r.map_err(|e| e.to_string())?;
    }
    let finished = rec.lock().unwrap_or_else(|e| e.into_inner()).done();
    if !finished {
        // Wait for the rest, or until nothing arrives for `idle`.
        loop {
            let before = rec.lock().unwrap_or_else(|e| e.into_inner()).received;
            if tokio::time::timeout(s.idle, done.notified()).await.is_ok() {
                break;
            }
            let r = rec.lock().unwrap_or_else(|e| e.into_inner());
            if r.done() || r.received == before {
                break;
            }
        }
    }
    let (cpu1, _) = rusage();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = publisher.disconnect().await;
        let _ = sub.disconnect().await;
    })
    .await;
    let rec = std::mem::replace(
        &mut *rec.lock().unwrap_or_else(|e| e.into_inner()),
        Recorder::new(start, 0),
    );
    Ok(Measured::new(rec, first_ns.unwrap_or(0), cpu1 - cpu0))
}
