//! The embedded broker of `steadfast demo --transport quic`: the `mqtt5` crate's broker with its
//! own QUIC listener (quinn on ring), on a free loopback UDP port, with a certificate made at
//! start (a throw-away CA and a server certificate for 127.0.0.1 and localhost, never written
//! anywhere but a private temporary directory).
//!
//! Why not rmqtt, the TCP demo's broker: its `quic` feature needs rmqtt-net's `tls` feature,
//! which builds rustls with aws-lc-rs, a C library build the workspace keeps out (see
//! docs/demo.md). The broker keeps its sessions in files under the temporary directory, so
//! that the demo's broker restart (a real shutdown with DISCONNECT 0x8B, then a new broker on
//! the same port) keeps the subscriber's session and its queued messages.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mqtt5::broker::config::{QuicConfig, ServerDeliveryStrategy, StorageBackend, StorageConfig};
use mqtt5::broker::{BrokerConfig, BrokerShutdownHandle, MqttBroker};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::task::JoinHandle;

/// The name and version shown in the demo's header and report.
pub const NAME: &str = "mqtt5 0.49 broker, QUIC listener (embedded)";

/// How long a start or a stop may take.
const LIMIT: Duration = Duration::from_secs(10);

/// A running embedded QUIC broker. Dropping it stops it.
pub struct QuicBroker {
    addr: SocketAddr,
    ca_pem: String,
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    running: Option<Running>,
}

struct Running {
    stop: BrokerShutdownHandle,
    task: JoinHandle<()>,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("embedded QUIC broker: {what}: {e}")
}

impl QuicBroker {
    /// Makes the certificates and starts the broker on a free UDP port of 127.0.0.1.
    pub async fn start() -> Result<QuicBroker, String> {
        let dir = tempfile::Builder::new()
            .prefix("steadfast-demo-quic")
            .tempdir()
            .map_err(|e| err("cannot create a temporary directory", e))?;
        let (ca_pem, cert_pem, key_pem) = certificates().map_err(|e| err("certificates", e))?;
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, cert_pem).map_err(|e| err("cannot write the certificate", e))?;
        std::fs::write(&key, key_pem).map_err(|e| err("cannot write the key", e))?;
        let mut b = QuicBroker {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca_pem,
            dir,
            cert,
            key,
            running: None,
        };
        b.run(0).await?;
        Ok(b)
    }

    async fn run(&mut self, port: u16) -> Result<(), String> {
        let quic = QuicConfig::new(self.cert.clone(), self.key.clone())
            .with_bind_addresses(vec![SocketAddr::from(([127, 0, 0, 1], port))]);
        let config = BrokerConfig::default()
            // Its TCP listener is not used; it gets a free loopback port.
            .with_bind_addresses(vec![SocketAddr::from(([127, 0, 0, 1], 0))])
            .with_storage(StorageConfig {
                backend: StorageBackend::File,
                base_dir: self.dir.path().join("sessions"),
                enable_persistence: true,
                ..StorageConfig::default()
            })
            .with_sys_topics_enabled(false)
            // Deliveries on the client's own stream: the single-stream convention.
            .with_server_delivery_strategy(ServerDeliveryStrategy::ControlOnly)
            .with_quic(quic);
        // A restart on the old port may find it still taken for a moment.
        let mut tries = 0;
        let mut broker = loop {
            match MqttBroker::with_config(config.clone()).await {
                Ok(b) => break b,
                Err(_) if port != 0 && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(err(&format!("cannot start on UDP port {port}"), e)),
            }
        };
        self.addr = broker
            .quic_local_addr()
            .ok_or_else(|| err("no QUIC listener", "none bound"))?;
        let mut ready = broker.ready_receiver();
        let stop = broker.shutdown_handle();
        let task = tokio::spawn(async move {
            // Errors end the broker; the clients see it as a lost connection.
            let _ = broker.run().await;
        });
        while !*ready.borrow() {
            match tokio::time::timeout(LIMIT, ready.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(err("not ready", "within 10 s")),
            }
        }
        self.running = Some(Running { stop, task });
        Ok(())
    }

    /// Where its QUIC listener is (UDP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) the clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Shuts down (every client gets DISCONNECT 0x8B, server shutting down, and its QUIC
    /// connection closed) and starts again on the same UDP port, with the sessions it saved.
    pub async fn restart(&mut self) -> Result<(), String> {
        if let Some(r) = self.running.take() {
            r.stop.shutdown();
            let _ = tokio::time::timeout(LIMIT, r.task).await;
        }
        self.run(self.addr.port()).await
    }
}

impl Drop for QuicBroker {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop.shutdown();
            r.task.abort();
        }
    }
}

/// A throw-away CA and a server certificate signed by it for 127.0.0.1 and localhost:
/// `(ca_pem, cert_pem, key_pem)`.
fn certificates() -> Result<(String, String, String), rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "steadfast demo CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    leaf.distinguished_name = dn;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert_pem = leaf.signed_by(&key, &issuer)?.pem();
    Ok((ca_pem, cert_pem, key.serialize_pem()))
}
