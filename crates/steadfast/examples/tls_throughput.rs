//! Rough throughput of TCP vs TLS: QoS 1, 64-byte payloads, 10,000 messages (by default)
//! from one publisher to one subscriber through private Mosquitto brokers on loopback, one
//! plain and one with a TLS listener (certificates generated at start with rcgen).
//!
//! ```text
//! cargo run --release -p steadfast --example tls_throughput -- [COUNT] [PAYLOAD_BYTES]
//! ```
//!
//! The time runs from the first publish to the last message received; up to 1,000 publishes
//! are in flight at once. It needs `/usr/sbin/mosquitto`.

use std::error::Error;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use steadfast::Message;
use steadfast::{ClientBuilder, ClientEvent, Lifecycle, QoS};
use steadfast_chaos::mosquitto::Mosquitto;

const IN_FLIGHT: usize = 1000;

fn write(dir: &Path, name: &str, text: &str) -> std::io::Result<std::path::PathBuf> {
    let p = dir.join(name);
    fs::write(&p, text)?;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
    Ok(p)
}

async fn connected(events: &mut steadfast::Events) -> Result<(), Box<dyn Error>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await? {
            Some(ClientEvent::Lifecycle {
                event: Lifecycle::Connected { .. },
                ..
            }) => return Ok(()),
            Some(ClientEvent::Lifecycle {
                event: Lifecycle::Fatal { reason },
                ..
            }) => return Err(format!("fatal: {reason}").into()),
            Some(_) => {}
            None => return Err("client ended".into()),
        }
    }
}

/// Messages per second from the first publish to the last message received.
async fn measure(
    url: &str,
    ca: Option<&Path>,
    count: usize,
    size: usize,
) -> Result<f64, Box<dyn Error>> {
    let with_ca = |b: ClientBuilder| match ca {
        Some(ca) => b.ca_file(ca),
        None => b,
    };
    let topic = format!("bench/{}", std::process::id());
    let (sub, mut sub_events) = with_ca(ClientBuilder::from_url(url)?).build()?;
    connected(&mut sub_events).await?;
    sub.subscribe(topic.as_str(), QoS::AtLeastOnce).await?;
    let (publisher, mut pub_events) = with_ca(ClientBuilder::from_url(url)?).build()?;
    connected(&mut pub_events).await?;
    tokio::spawn(async move { while pub_events.recv().await.is_some() {} });

    let payload = vec![b'x'; size];
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let p = publisher.clone();
    let t = topic.clone();
    tokio::spawn(async move {
        for _ in 0..count {
            let permit = permits.clone().acquire_owned().await.expect("semaphore");
            let (p, t, payload) = (p.clone(), t.clone(), payload.clone());
            tokio::spawn(async move {
                p.send(Message::new(t.as_str(), payload).qos(QoS::AtLeastOnce))
                    .await
                    .expect("publish");
                drop(permit);
            });
        }
    });
    let mut received = 0;
    while received < count {
        match tokio::time::timeout(Duration::from_secs(30), sub_events.recv()).await? {
            Some(ClientEvent::Message(_)) => received += 1,
            Some(_) => {}
            None => return Err("subscriber ended".into()),
        }
    }
    let elapsed = started.elapsed();
    publisher.disconnect().await?;
    sub.disconnect().await?;
    Ok(count as f64 / elapsed.as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let count: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);

    let dir = std::env::temp_dir().join(format!("steadfast-tls-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&key, &issuer)?;
    let ca = write(&dir, "ca.pem", &ca_pem)?;
    let cert_path = write(&dir, "server.pem", &cert.pem())?;
    let key_path = write(&dir, "server.key", &key.serialize_pem())?;

    let plain = Mosquitto::builder().start()?;
    let tls = Mosquitto::builder()
        .extra_config(format!(
            "certfile {}\nkeyfile {}\n",
            cert_path.display(),
            key_path.display()
        ))
        .start()?;

    println!("QoS 1, {size} B payloads, {count} messages, 1 publisher -> 1 subscriber, loopback");
    for round in 0..2 {
        let tcp = measure(&plain.url(), None, count, size).await?;
        let secure = measure(
            &format!("mqtts://127.0.0.1:{}", tls.port()),
            Some(&ca),
            count,
            size,
        )
        .await?;
        println!(
            "round {}: tcp {tcp:>9.0} msg/s   tls {secure:>9.0} msg/s   (tls/tcp {:.2})",
            round + 1,
            secure / tcp
        );
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
