//! rumqttc (MQTT 3.1.1, its main API): `AsyncClient::publish` into the request channel, the
//! event loop polled in its own task; the subscriber handles publishes in its poll loop.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::common::{due, ns_since, put_header, rusage, Measured, Recorder, Scenario};

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn options(s: &Scenario, role: &str) -> MqttOptions {
    let mut o = MqttOptions::new(format!("rq-{role}-{}", s.run_id), s.host.clone(), s.port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_session(true);
    // The same window of unacknowledged publishes as the other clients.
    o.set_inflight(s.window.min(u16::MAX as usize) as u16);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// Polls until `pred` matches an event (CONNACK, SUBACK), within 10 s.
async fn poll_until(el: &mut EventLoop, pred: impl Fn(&Event) -> bool) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ev = el.poll().await.map_err(|e| e.to_string())?;
            if pred(&ev) {
                return Ok(());
            }
        }
    })
    .await
    .map_err(|_| "timed out".to_string())?
}

pub async fn run(s: &Scenario) -> Result<Measured, String> {
    let (sub, mut sub_el) = AsyncClient::new(options(s, "sub"), s.window);
    sub.subscribe(s.filter(), qos(s.qos))
        .await
        .map_err(|e| e.to_string())?;
    poll_until(&mut sub_el, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    })
    .await?;
    let (publisher, mut pub_el) = AsyncClient::new(options(s, "pub"), s.window);
    poll_until(&mut pub_el, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await?;
    let pub_loop = tokio::spawn(async move { while pub_el.poll().await.is_ok() {} });

    let start = Instant::now();
    let (cpu0, _) = rusage();
    let idle = s.idle;
    let mut rec = Recorder::new(start, s.count);
    let receiver = tokio::spawn(async move {
        while !rec.done() {
            match tokio::time::timeout(idle, sub_el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    rec.record(&p.payload);
                }
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        (rec, sub_el)
    });
    let topic = s.topic();
    let mut buf = s.payload_buf();
    let began = tokio::time::Instant::now();
    let mut first_ns = None;
    for seq in 0..s.count {
        if let Some(at) = due(began, s.rate, seq) {
            tokio::time::sleep_until(at).await;
        }
        let now = ns_since(start);
        first_ns.get_or_insert(now);
        put_header(&mut buf, seq, now);
        publisher
            .publish(topic.as_str(), qos(s.qos), false, buf.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    let (rec, mut sub_el) = receiver.await.map_err(|e| e.to_string())?;
    let (cpu1, _) = rusage();
    let m = Measured::new(rec, first_ns.unwrap_or(0), cpu1 - cpu0);
    let _ = publisher.disconnect().await;
    let _ = sub.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while sub_el.poll().await.is_ok() {}
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), pub_loop).await;
    Ok(m)
}
