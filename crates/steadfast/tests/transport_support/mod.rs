//! Support for the `transport_*` tests: a test PKI made with rcgen at run time, private
//! Mosquitto brokers with TLS listeners, a WebSocket-to-TCP bridge (Mosquitto here has no
//! working WebSocket listener), and an event log with timed waits.
//!
//! No key material is committed: every certificate and key is generated per test run and
//! written to a temporary directory (0755, files 0644 so that Mosquitto can read them even
//! when it drops to its own user).
#![allow(dead_code)]

use std::fs;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use steadfast::Message;
use steadfast::{ClientEvent, Events, Lifecycle};
pub use steadfast_chaos::mosquitto::Mosquitto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The default bound on one wait.
pub const T: Duration = Duration::from_secs(10);

/// Runs an async test body on a two-worker runtime with an overall limit.
pub fn run<F: Future<Output = ()>>(limit: Duration, body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if tokio::time::timeout(limit, body).await.is_err() {
            panic!("test exceeded its overall limit of {limit:?}");
        }
    });
}

/// A name unique in this process and run.
pub fn uid(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff
    )
}

/// A temporary directory (0755) removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(uid(prefix));
        fs::create_dir_all(&p).expect("create temp dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a world-readable file (0644) and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, contents).expect("write file");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A certificate and its key, as PEM files and text.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The test PKI: one trusted CA, one unknown CA, and the certificates the tests need.
pub struct Pki {
    pub dir: TempDir,
    /// The trusted CA certificate.
    pub ca: PathBuf,
    pub ca_pem: String,
    /// For 127.0.0.1 and localhost, signed by the CA.
    pub server: Pair,
    /// For 127.0.0.1 and localhost, signed by the CA, expired in 2021.
    pub expired: Pair,
    /// For `wrong.example` only, signed by the CA.
    pub wrong_host: Pair,
    /// For 127.0.0.1 and localhost, signed by a CA the client does not know.
    pub unknown_ca: Pair,
    /// A client certificate signed by the CA.
    pub client: Pair,
    /// A client certificate signed by the unknown CA.
    pub rogue_client: Pair,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn leaf_params(names: &[&str], cn: &str, purpose: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.extended_key_usages = vec![purpose];
    p.use_authority_key_identifier_extension = true;
    p
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = TempDir::new("steadfast-pki");
        let ca_key = KeyPair::generate().expect("key");
        let ca_p = ca_params("steadfast test CA");
        let ca_cert = ca_p.self_signed(&ca_key).expect("ca");
        let ca_pem = ca_cert.pem();
        let ca = dir.write("ca.pem", &ca_pem);
        let issuer = Issuer::new(ca_p, ca_key);

        let other_key = KeyPair::generate().expect("key");
        let other_issuer = Issuer::new(ca_params("some other CA"), other_key);

        let leaf = |name: &str, params: CertificateParams, issuer: &Issuer<'_, KeyPair>| -> Pair {
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, issuer).expect("sign");
            let cert_pem = cert.pem();
            let key_pem = key.serialize_pem();
            Pair {
                cert: dir.write(&format!("{name}.pem"), &cert_pem),
                key: dir.write(&format!("{name}.key"), &key_pem),
                cert_pem,
                key_pem,
            }
        };
        let local = ["127.0.0.1", "localhost"];
        let server = leaf(
            "server",
            leaf_params(&local, "localhost", ExtendedKeyUsagePurpose::ServerAuth),
            &issuer,
        );
        let mut expired_p = leaf_params(&local, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        expired_p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired_p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let expired = leaf("expired", expired_p, &issuer);
        let wrong_host = leaf(
            "wrong-host",
            leaf_params(
                &["wrong.example"],
                "wrong.example",
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            &issuer,
        );
        let unknown_ca = leaf(
            "unknown-ca",
            leaf_params(&local, "localhost", ExtendedKeyUsagePurpose::ServerAuth),
            &other_issuer,
        );
        let client = leaf(
            "client",
            leaf_params(&[], "steadfast-client", ExtendedKeyUsagePurpose::ClientAuth),
            &issuer,
        );
        let rogue_client = leaf(
            "rogue-client",
            leaf_params(&[], "rogue-client", ExtendedKeyUsagePurpose::ClientAuth),
            &other_issuer,
        );
        Pki {
            dir,
            ca,
            ca_pem,
            server,
            expired,
            wrong_host,
            unknown_ca,
            client,
            rogue_client,
        }
    }
}

/// A private Mosquitto whose only listener speaks TLS with `server`'s certificate. With
/// `require_client_cert`, clients must present a certificate signed by the test CA.
pub fn tls_broker(pki: &Pki, server: &Pair, require_client_cert: bool) -> Mosquitto {
    tls_broker_with(pki, server, require_client_cert, "")
}

/// [`tls_broker`] with extra listener settings (for example `tls_version tlsv1.2`).
pub fn tls_broker_with(
    pki: &Pki,
    server: &Pair,
    require_client_cert: bool,
    extra: &str,
) -> Mosquitto {
    let mut conf = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        pki.ca.display(),
        server.cert.display(),
        server.key.display()
    );
    if require_client_cert {
        conf.push_str("require_certificate true\n");
    }
    conf.push_str(extra);
    Mosquitto::builder()
        .extra_config(conf)
        .start()
        .expect("start TLS mosquitto")
}

/// A plain-TCP private Mosquitto.
pub fn tcp_broker() -> Mosquitto {
    Mosquitto::builder().start().expect("start mosquitto")
}

/// TLS handshakes that failed on the broker's side, as its log tells: an `OpenSSL Error`
/// line or a `Client connection from ... failed` line. The harness's readiness probe, which
/// connects and closes without a handshake, shows up as `unexpected eof` and is not counted.
pub fn broker_failed_handshakes(broker: &Mosquitto) -> usize {
    broker
        .log()
        .lines()
        .filter(|l| {
            (l.contains("OpenSSL Error") || l.contains("Client connection from"))
                && !l.contains("unexpected eof")
        })
        .count()
}

// ----------------------------------------------------------------------------------------
// WebSocket bridge

/// A WebSocket server in front of a TCP broker: it checks the path and the `mqtt`
/// subprotocol, answers with `Sec-WebSocket-Protocol: mqtt`, and pipes binary frames to the
/// broker and the broker's bytes back as binary frames. With a TLS config it serves `wss://`.
/// Dropping it closes the listener and every bridged connection.
pub struct WsBridge {
    pub port: u16,
    accept: JoinHandle<()>,
}

impl WsBridge {
    /// Starts on a free port (`port` 0) or a given one.
    pub async fn start(
        port: u16,
        upstream: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> WsBridge {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if port != 0 && tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("bridge bind: {e}"),
            }
        };
        let port = listener.local_addr().expect("addr").port();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let accept = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                bridge_one(tls, upstream).await;
                            }
                        }
                        None => bridge_one(tcp, upstream).await,
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        WsBridge { port, accept }
    }
}

impl Drop for WsBridge {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every bridged connection.
        self.accept.abort();
    }
}

async fn bridge_one<S>(stream: S, upstream: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let offered = req
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let ok = offered.split(',').any(|p| p.trim() == "mqtt");
        if !ok || req.uri().path() != "/mqtt" {
            let mut e = ErrorResponse::new(Some(format!(
                "need subprotocol mqtt on /mqtt, got {offered:?} on {}",
                req.uri()
            )));
            *e.status_mut() = StatusCode::BAD_REQUEST;
            return Err(e);
        }
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        return;
    };
    let Ok(mut tcp) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut tcp_rx, mut tcp_tx) = tcp.split();
    let up = async {
        while let Some(Ok(m)) = ws_rx.next().await {
            let data = match m {
                WsMessage::Binary(b) => b,
                WsMessage::Close(_) | WsMessage::Text(_) => break,
                _ => continue,
            };
            if tcp_tx.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = tcp_tx.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match tcp_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(WsMessage::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// A rustls server config with this certificate, for the `wss://` bridge.
pub fn tls_server_config(pair: &Pair) -> Arc<rustls::ServerConfig> {
    server_config(pair, None, 2)
}

/// A rustls server config with this certificate that requires a client certificate signed by
/// `client_ca` (PEM) and sends `tickets` TLS 1.3 session tickets (rustls' default is 2).
pub fn mtls_server_config(
    pair: &Pair,
    client_ca: &str,
    tickets: usize,
) -> Arc<rustls::ServerConfig> {
    server_config(pair, Some(client_ca), tickets)
}

fn server_config(
    pair: &Pair,
    client_ca: Option<&str>,
    tickets: usize,
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem_certs = |pem: &str| {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert")
    };
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in pem_certs(ca) {
                roots.add(c).expect("client CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(pem_certs(&pair.cert_pem), key)
        .expect("server config");
    config.send_tls13_tickets = tickets;
    Arc::new(config)
}

// ----------------------------------------------------------------------------------------
// Events

/// The client's events with timed waits; every event's `Debug` text is kept (the tests check
/// that no secret shows up in it).
pub struct Log {
    pub events: Events,
    pub seen: Vec<ClientEvent>,
    pub debug: Vec<String>,
}

impl Log {
    pub fn new(events: Events) -> Log {
        Log {
            events,
            seen: Vec::new(),
            debug: Vec::new(),
        }
    }

    /// Waits for the first event that matches, failing (with the log so far) after `limit`.
    pub async fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&ClientEvent) -> bool,
    ) -> ClientEvent {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    self.debug.push(format!("{ev:?}"));
                    self.seen.push(ev.clone());
                    if pred(&ev) {
                        return ev;
                    }
                }
                Ok(None) => panic!(
                    "event stream ended while waiting for {what}; log:\n{}",
                    self.dump()
                ),
                Err(_) => panic!("no {what} within {limit:?}; log:\n{}", self.dump()),
            }
        }
    }

    /// Waits for a lifecycle event that matches.
    pub async fn lifecycle(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&Lifecycle) -> bool,
    ) -> Lifecycle {
        match self
            .wait(
                what,
                limit,
                |e| matches!(e, ClientEvent::Lifecycle { event, .. } if pred(event)),
            )
            .await
        {
            ClientEvent::Lifecycle { event, .. } => event,
            _ => unreachable!(),
        }
    }

    pub async fn connected(&mut self) {
        self.lifecycle("Connected", T, |e| matches!(e, Lifecycle::Connected { .. }))
            .await;
    }

    /// Waits for a message on `topic` and returns its payload.
    pub async fn message(&mut self, topic: &str) -> Vec<u8> {
        match self
            .wait(
                &format!("a message on {topic}"),
                T,
                |e| matches!(e, ClientEvent::Message(m) if m.topic() == topic),
            )
            .await
        {
            ClientEvent::Message(m) => m.payload().to_vec(),
            _ => unreachable!(),
        }
    }

    /// Waits for a message on `topic` with exactly this payload (others are skipped).
    pub async fn payload(&mut self, topic: &str, payload: &[u8]) {
        self.wait(&format!("{:?} on {topic}", String::from_utf8_lossy(payload)), T, |e| {
            matches!(e, ClientEvent::Message(m) if m.topic() == topic && m.payload().as_ref() == payload)
        })
        .await;
    }

    /// Makes sure the broker has the subscription: the client publishes to the topic itself
    /// and waits for the message (the broker handles one connection's packets in order).
    pub async fn sync(&mut self, client: &steadfast::Client, topic: &str) {
        let marker = uid("sync");
        client
            .send(Message::new(topic, marker.clone()).qos(steadfast::QoS::AtLeastOnce))
            .await
            .expect("sync publish");
        self.payload(topic, marker.as_bytes()).await;
    }

    /// Takes every event until the client's stream ends (after its `disconnect()`), at most
    /// `limit`.
    pub async fn drain_until_closed(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            self.debug.push(format!("{ev:?}"));
            self.seen.push(ev);
        }
    }

    /// How many `Connecting` events were seen.
    pub fn attempts(&self) -> usize {
        self.seen
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    ClientEvent::Lifecycle {
                        event: Lifecycle::Connecting { .. },
                        ..
                    }
                )
            })
            .count()
    }

    pub fn dump(&self) -> String {
        self.debug.join("\n")
    }
}
