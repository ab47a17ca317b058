//! What the transport benchmarks (`reconnect`, `lossy`) share: a PKI made at start, one
//! private Mosquitto with a plain and a TLS listener, and a QUIC-to-TCP bridge in front of it,
//! so that TCP, TLS and QUIC all reach the same broker.
//!
//! The bridge is the bench's own (steadfast-chaos has one for the tests, bound to loopback):
//! the lossy-link bench needs it on the address of a veth interface. It accepts QUIC with
//! ALPN `mqtt`, takes the client's first bidirectional stream and pipes it to a new TCP
//! connection to Mosquitto (`TCP_NODELAY`); when either side ends, the other is closed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use steadfast_chaos::mosquitto::Mosquitto;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A CA and a server certificate for the given addresses, written to a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

impl Pki {
    pub fn generate(addrs: &[IpAddr]) -> io::Result<Pki> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("steadfast-bench-pki-")
            .tempdir()?;
        // Mosquitto may read them as another user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let ca_key = KeyPair::generate().map_err(|e| err("CA key", e))?;
        let mut ca_p = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "steadfast bench CA");
        ca_p.distinguished_name = dn;
        ca_p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca_p.self_signed(&ca_key).map_err(|e| err("CA", e))?.pem();
        let issuer = Issuer::new(ca_p, ca_key);
        let names: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
        let mut leaf = CertificateParams::new(names).map_err(|e| err("server cert", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "steadfast bench broker");
        leaf.distinguished_name = dn;
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| err("server key", e))?;
        let cert_pem = leaf
            .signed_by(&key, &issuer)
            .map_err(|e| err("server cert", e))?
            .pem();
        let key_pem = key.serialize_pem();
        let write = |name: &str, text: &str| -> io::Result<PathBuf> {
            let p = dir.path().join(name);
            std::fs::write(&p, text)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
            Ok(p)
        };
        Ok(Pki {
            ca: write("ca.pem", &ca_pem)?,
            cert: write("server.pem", &cert_pem)?,
            key: write("server.key", &key_pem)?,
            cert_pem,
            key_pem,
            dir,
        })
    }

    /// Where the files are.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// The broker side: Mosquitto with a plain and a TLS 1.3 listener on `ip`, and the QUIC
/// bridge on `ip` in front of the plain one.
pub struct Brokers {
    /// Runs until dropped.
    #[allow(dead_code)]
    mosquitto: Mosquitto,
    pub tcp: SocketAddr,
    pub tls: SocketAddr,
    pub quic: SocketAddr,
    bridge: Bridge,
}

impl Brokers {
    pub async fn start(ip: IpAddr, pki: &Pki) -> io::Result<Brokers> {
        let (tcp_port, tls_port) = (steadfast_chaos::free_port(), steadfast_chaos::free_port());
        let mut conf = String::from("set_tcp_nodelay true\nmax_connections -1\n");
        if !ip.is_loopback() {
            conf.push_str(&format!("listener {tcp_port} {ip}\n"));
        }
        conf.push_str(&format!(
            "listener {tls_port} {ip}\ncafile {}\ncertfile {}\nkeyfile {}\ntls_version tlsv1.3\n",
            pki.ca.display(),
            pki.cert.display(),
            pki.key.display()
        ));
        let mosquitto = Mosquitto::builder()
            .max_inflight_messages(1000)
            .max_queued_messages(100_000)
            .extra_config(conf)
            .start()?;
        // On loopback the builder's own listener (127.0.0.1) is the plain one.
        let tcp = if ip.is_loopback() {
            mosquitto.addr()
        } else {
            SocketAddr::new(ip, tcp_port)
        };
        let bridge = Bridge::start(SocketAddr::new(ip, 0), mosquitto.addr(), pki).await?;
        Ok(Brokers {
            mosquitto,
            tcp,
            tls: SocketAddr::new(ip, tls_port),
            quic: bridge.addr,
            bridge,
        })
    }

    /// The URL of a transport: `tcp`, `tls` or `quic`.
    pub fn url(&self, transport: &str) -> String {
        match transport {
            "tls" => format!("mqtts://{}", self.tls),
            "quic" => format!("quic://{}", self.quic),
            _ => format!("mqtt://{}", self.tcp),
        }
    }

    /// Stops the bridge (Mosquitto stops when dropped).
    pub fn stop(self) {
        drop(self.bridge);
    }
}

/// A QUIC-to-TCP bridge (see the module docs).
struct Bridge {
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    accept: JoinHandle<()>,
}

impl Bridge {
    async fn start(bind: SocketAddr, upstream: SocketAddr, pki: &Pki) -> io::Result<Bridge> {
        let certs = CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err("certificate", e))?;
        let key =
            PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).map_err(|e| err("key", e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| err("TLS versions", e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| err("certificate and key", e))?;
        tls.alpn_protocols = vec![b"mqtt".to_vec()];
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| err("QUIC TLS", e))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(120)).map_err(|e| err("idle", e))?,
        ));
        config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(config, bind)?;
        let addr = endpoint.local_addr()?;
        let accept = tokio::spawn(accept_loop(endpoint.clone(), upstream));
        Ok(Bridge {
            addr,
            endpoint,
            accept,
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"bridge stopped");
        self.accept.abort();
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, upstream: SocketAddr) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                return;
            };
            let Ok(tcp) = TcpStream::connect(upstream).await else {
                conn.close(1u32.into(), b"upstream unreachable");
                return;
            };
            let _ = tcp.set_nodelay(true);
            let (mut r, mut w) = tcp.into_split();
            let up = async {
                let _ = tokio::io::copy(&mut recv, &mut w).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
            };
            let down = async {
                let _ = tokio::io::copy(&mut r, &mut send).await;
                let _ = send.finish();
            };
            tokio::join!(up, down);
            conn.close(0u32.into(), b"upstream closed");
        });
    }
}
