//! TLS over TCP (`mqtts://`, `ssl://`, and under `wss://`) with rustls and its ring provider.
//!
//! Certificate problems become [`TransportError::TlsFatal`] (never retried) with a message
//! that names the problem: `certificate expired`, `unknown issuer`, `name mismatch`, ...; a
//! server that requires a client certificate we do not have, or refuses ours, is fatal too.
//! Any other handshake failure is [`TransportError::Tls`] and retried like an I/O error.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, ResolvesClientCert, Resumption,
    Tls12ClientSessionValue, Tls13ClientSessionValue, WebPkiServerVerifier,
};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, HandshakeKind,
    InconsistentKeys, NamedGroup, RootCertStore, SignatureScheme,
};
use steadfast_proto::TransportError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::BoxTransport;

/// After a TLS 1.3 handshake in which the server asked for a client certificate, the longest
/// wait for its verdict (a session ticket means accepted, an alert means refused) before
/// going on. TLS 1.3 servers check the client certificate after the client has finished.
/// A server that accepts and sends no session ticket sends nothing until the CONNECT, so the
/// wait usually ends by time: it is [`VERDICT_WAIT_PER_HANDSHAKE`] times the handshake's
/// duration, at least [`VERDICT_WAIT_MIN`], and this whole bound only after a refusal came
/// later than that on this connector. Once a server has accepted our certificate (a ticket,
/// or data after the handshake), later connects to it do not wait at all.
const CLIENT_AUTH_VERDICT_WAIT: Duration = Duration::from_secs(1);

/// The verdict wait in handshake durations: the verdict is one round trip and one certificate
/// check away, and the handshake was about one round trip and a signature.
const VERDICT_WAIT_PER_HANDSHAKE: u32 = 4;

/// The shortest verdict wait, for scheduling delays on fast links.
const VERDICT_WAIT_MIN: Duration = Duration::from_millis(100);

/// Servers remembered as having accepted our client certificate, per connector.
const ACCEPTED_SERVERS: usize = 32;

/// TLS sessions remembered for resumption, per reusable configuration ([`Slot`]).
const SESSION_CACHE: usize = 32;

/// Reusable configurations kept while no connection holds them, per connector and transport
/// (one per connection that was open at the same time as others, beyond which they are freed).
const FREE_SLOTS: usize = 8;

/// The warning logged (once per process, through `tracing`) when certificate verification is
/// turned off.
pub(crate) const INSECURE_WARNING: &str = "WARNING: TLS certificate verification is disabled \
     (danger_accept_invalid_certs): the connection is encrypted, but the server is not authenticated";

/// A TLS setting that cannot be used: an unreadable or empty CA file, a key that does not
/// match its certificate, an invalid server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfigError(pub String);

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsConfigError {}

/// PEM data, from a file (read when the connector is built) or given inline.
#[derive(Clone)]
enum PemSource {
    File(PathBuf),
    Inline(Arc<[u8]>),
}

impl PemSource {
    fn load(&self, what: &str) -> Result<Vec<u8>, TlsConfigError> {
        match self {
            PemSource::File(p) => std::fs::read(p)
                .map_err(|e| TlsConfigError(format!("cannot read {what} {}: {e}", p.display()))),
            PemSource::Inline(b) => Ok(b.to_vec()),
        }
    }

    fn describe(&self) -> String {
        match self {
            PemSource::File(p) => p.display().to_string(),
            PemSource::Inline(b) => format!("<{} bytes of PEM>", b.len()),
        }
    }
}

/// TLS settings for `mqtts://`, `ssl://` and `wss://` servers.
///
/// By default the server is verified against the operating system's root certificates, the
/// TLS server name (SNI) is the URL's host, no client certificate is sent and no ALPN
/// protocol is offered. Set it on the builder with [`ClientBuilder::tls`](crate::ClientBuilder::tls)
/// or the single setters ([`ca_file`](crate::ClientBuilder::ca_file), ...), or give it to
/// [`DefaultConnector::with_tls`](super::DefaultConnector::with_tls).
///
/// `Debug` shows file paths but never key material.
///
/// ```
/// use steadfast::transport::TlsOptions;
///
/// let tls = TlsOptions::new()
///     .ca_file("/etc/mqtt/ca.pem")
///     .client_cert_files("/etc/mqtt/client.pem", "/etc/mqtt/client.key")
///     .alpn_protocols(["mqtt"]);
/// assert!(!tls.uses_system_roots());
/// ```
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// A rustls configuration of the application's own ([`TlsOptions::client_config`]).
    config: Option<Arc<ClientConfig>>,
    ca: Vec<PemSource>,
    client_cert: Option<(PemSource, PemSource)>,
    accept_invalid_certs: bool,
    server_name: Option<String>,
    alpn: Vec<Vec<u8>>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roots: Vec<String> = if self.ca.is_empty() {
            vec!["<system roots>".into()]
        } else {
            self.ca.iter().map(PemSource::describe).collect()
        };
        let cert = self.client_cert.as_ref().map(|(c, k)| {
            let key = match k {
                PemSource::File(p) => p.display().to_string(),
                PemSource::Inline(_) => "<redacted>".into(),
            };
            (c.describe(), key)
        });
        let alpn: Vec<String> = self
            .alpn
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        f.debug_struct("TlsOptions")
            .field("own_client_config", &self.config.is_some())
            .field("roots", &roots)
            .field("client_cert_and_key", &cert)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("server_name", &self.server_name)
            .field("alpn", &alpn)
            .finish()
    }
}

impl TlsOptions {
    /// A rustls [`ClientConfig`] of the application's own, as rumqttc takes one: its roots and
    /// verifier, client certificate resolver, protocol versions, cipher suites and ALPN
    /// protocols are used as they are (the crypto provider is the config's own). The file and
    /// PEM options ([`ca_file`](Self::ca_file), [`client_cert_files`](Self::client_cert_files),
    /// [`danger_accept_invalid_certs`](Self::danger_accept_invalid_certs), ...) cannot be
    /// combined with it: the connector refuses the mix with a [`TlsConfigError`].
    /// [`server_name`](Self::server_name) still applies, and
    /// [`alpn_protocols`](Self::alpn_protocols), when set, replaces the config's.
    ///
    /// What steadfast changes on its copies of the config: the session resumption store (the
    /// connector's own, so that reconnects resume and it can see whether the server accepted
    /// a client certificate), and the client certificate resolver is wrapped (same
    /// certificates) to note when the server asks for one. Over QUIC the ALPN is `mqtt`, and
    /// a certificate the config's verifier refuses is fatal like any other refusal, but named
    /// by its TLS alert rather than in the words of the file options (that verifier cannot be
    /// watched).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use steadfast::transport::TlsOptions;
    ///
    /// let mut roots = rustls::RootCertStore::empty();
    /// # let _ = &mut roots; // add the CA certificates here
    /// let config = rustls::ClientConfig::builder_with_provider(Arc::new(
    ///     rustls::crypto::ring::default_provider(),
    /// ))
    /// .with_safe_default_protocol_versions()
    /// .unwrap()
    /// .with_root_certificates(roots)
    /// .with_no_client_auth();
    /// let tls = TlsOptions::new().client_config(Arc::new(config));
    /// assert!(tls.has_client_config());
    /// ```
    pub fn client_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.config = Some(config);
        self
    }

    /// Whether a [`client_config`](Self::client_config) of the application's own is set.
    pub fn has_client_config(&self) -> bool {
        self.config.is_some()
    }

    /// The defaults: system roots, full verification, SNI from the URL, no client certificate.
    pub fn new() -> Self {
        TlsOptions::default()
    }

    /// Trusts the CA certificates in this PEM file (repeatable). Once any CA is given, the
    /// system roots are no longer used, like `mosquitto_sub --cafile`.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca.push(PemSource::File(path.into()));
        self
    }

    /// Trusts the CA certificates in this PEM text (repeatable); see [`ca_file`](Self::ca_file).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca.push(PemSource::Inline(pem.into().into()));
        self
    }

    /// Mutual TLS: the client certificate chain and its private key (PKCS#8, PKCS#1 or SEC1),
    /// as PEM files. Encrypted keys are not supported.
    pub fn client_cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((PemSource::File(cert.into()), PemSource::File(key.into())));
        self
    }

    /// Mutual TLS with the certificate chain and key given as PEM text.
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_cert = Some((
            PemSource::Inline(cert.into().into()),
            PemSource::Inline(key.into().into()),
        ));
        self
    }

    /// Accepts any server certificate: expired, self-signed, for another name. The connection
    /// is still encrypted but anyone in the path can impersonate the broker. For tests only;
    /// turning it on logs `WARNING: TLS certificate verification is disabled` (a `tracing`
    /// event at level WARN, once per process) when the connector is built.
    pub fn danger_accept_invalid_certs(mut self, on: bool) -> Self {
        self.accept_invalid_certs = on;
        self
    }

    /// The name sent as SNI and checked against the certificate, instead of the URL's host
    /// (for example when connecting by IP address to a broker whose certificate names a host).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// ALPN protocols to offer, most preferred first (for example `["mqtt"]` for brokers that
    /// share port 443 with HTTPS, or `["http/1.1"]` for `wss://` behind some proxies).
    pub fn alpn_protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<Vec<u8>>,
    {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// True when the server is verified against the operating system's roots (no CA given).
    pub fn uses_system_roots(&self) -> bool {
        self.config.is_none() && self.ca.is_empty() && !self.accept_invalid_certs
    }

    /// True when certificate verification is turned off.
    pub fn accepts_invalid_certs(&self) -> bool {
        self.accept_invalid_certs
    }

    /// True when a client certificate is configured (mutual TLS).
    pub fn has_client_cert(&self) -> bool {
        self.client_cert.is_some()
    }
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError(format!("bad PEM in {what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsConfigError(format!("no certificate found in {what}")));
    }
    Ok(certs)
}

/// Everything a TLS connect needs, built once per connector.
pub(crate) struct TlsContext {
    /// The shared configuration; each connect clones it to watch its own client-auth outcome.
    config: Arc<ClientConfig>,
    /// The server certificate verifier inside `config`, wrapped per QUIC connect (none with a
    /// config of the application's own, whose verifier cannot be taken out).
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    verifier: Option<Arc<dyn ServerCertVerifier>>,
    identity: Option<Arc<CertifiedKey>>,
    /// The client certificate resolver of a config of the application's own.
    own_resolver: Option<Arc<dyn ResolvesClientCert>>,
    /// Configurations for TLS over TCP, reused so that sessions resume.
    tcp_slots: Arc<SlotPool>,
    /// Configurations for QUIC, apart from TLS over TCP (their tickets carry QUIC transport
    /// parameters).
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    quic_slots: Arc<SlotPool>,
    /// Handshakes completed, full and resumed.
    handshakes: Arc<HandshakeCounters>,
    server_name: Option<ServerName<'static>>,
    /// What the server is verified against, for messages ("CA file /x/ca.pem").
    trust: String,
    /// What earlier connects learned about the servers' verdicts on our client certificate.
    verdicts: Arc<Mutex<Verdicts>>,
}

/// What earlier connects learned about the servers' verdicts on our client certificate.
#[derive(Debug, Default)]
struct Verdicts {
    /// `host:port` of servers that accepted it (a ticket, or data after the handshake): a
    /// connect to them does not wait for a verdict. At most [`ACCEPTED_SERVERS`], oldest
    /// forgotten first.
    accepted: Vec<String>,
    /// A refusal arrived after a verdict wait had ended: wait the whole
    /// [`CLIENT_AUTH_VERDICT_WAIT`] from now on.
    late_refusal: bool,
}

impl Verdicts {
    fn accept(&mut self, server: &str) {
        if self.accepted.iter().any(|s| s == server) {
            return;
        }
        if self.accepted.len() >= ACCEPTED_SERVERS {
            self.accepted.remove(0);
        }
        self.accepted.push(server.to_string());
    }

    fn refused_late(&mut self, server: &str) {
        self.accepted.retain(|s| s != server);
        self.late_refusal = true;
    }
}

fn lock<T>(v: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    v.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How many TLS handshakes a [`DefaultConnector`](super::DefaultConnector) (with its clones)
/// completed, over TCP (`mqtts://`, `wss://`) and inside QUIC (`quic://`), and how many of
/// them resumed an earlier session from a TLS 1.3 session ticket (or a TLS 1.2 session)
/// instead of a full handshake. Read it before and after a connect to tell whether that
/// connect resumed (see [`DefaultConnector::tls_handshakes`](super::DefaultConnector::tls_handshakes)).
///
/// A resumed handshake skips the server's certificate and its verification (the session was
/// verified when it was made), and the server does not ask for a client certificate again;
/// it still takes one round trip. 0-RTT (early data) is never used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsHandshakes {
    /// Full handshakes: the server's certificate was sent and verified.
    pub full: u64,
    /// Handshakes that resumed an earlier session.
    pub resumed: u64,
}

/// The connector's handshake counts (see [`TlsHandshakes`]).
#[derive(Debug, Default)]
struct HandshakeCounters {
    full: AtomicU64,
    resumed: AtomicU64,
}

impl HandshakeCounters {
    fn count(&self, resumed: bool) {
        let c = if resumed { &self.resumed } else { &self.full };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A client configuration kept from connect to connect. rustls resumes a session only with
/// the very certificate verifier and client-certificate resolver (the same `Arc`s) of the
/// connection that received its ticket, so a configuration made per connect would never
/// resume. Each slot has its own resolver, ticket store and probe: a connect takes a free one
/// (or makes one), and its connection holds it until it is dropped, so that no other
/// handshake reports into that probe meanwhile.
struct Slot {
    config: Arc<ClientConfig>,
    probe: Arc<HandshakeProbe>,
}

/// The free slots of one transport of a connector.
#[derive(Default)]
struct SlotPool(Mutex<Vec<Slot>>);

impl SlotPool {
    /// A free slot (the one given back last: its tickets are the freshest), or a new one.
    fn take(self: &Arc<Self>, make: impl FnOnce() -> Slot) -> SlotGuard {
        let slot = lock(&self.0).pop().unwrap_or_else(make);
        slot.probe.reset();
        SlotGuard {
            config: slot.config,
            probe: slot.probe,
            pool: self.clone(),
        }
    }
}

/// A slot taken by one connect and then its connection; given back to its pool when dropped
/// (at most [`FREE_SLOTS`] are kept).
pub(crate) struct SlotGuard {
    config: Arc<ClientConfig>,
    probe: Arc<HandshakeProbe>,
    pool: Arc<SlotPool>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut free = lock(&self.pool.0);
        if free.len() < FREE_SLOTS {
            free.push(Slot {
                config: self.config.clone(),
                probe: self.probe.clone(),
            });
        }
    }
}

#[cfg(feature = "quic")]
impl SlotGuard {
    /// The rustls configuration, for QUIC.
    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The server asked for a client certificate: its verdict comes after our handshake.
    pub(crate) fn client_cert_requested(&self) -> bool {
        self.probe.requested.load(Ordering::Relaxed)
    }

    /// The handshake resumed a session: the server's certificate was not verified (QUIC
    /// exposes no handshake kind; a resumed TLS 1.3 handshake has no certificate to verify).
    pub(crate) fn resumed(&self) -> bool {
        !self.probe.verified.load(Ordering::Relaxed)
    }
}

/// A TLS stream holding the configuration it was made with.
struct Held<S> {
    inner: S,
    #[allow(dead_code)] // held for its `Drop`
    slot: SlotGuard,
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl TlsContext {
    pub(crate) fn new(options: &TlsOptions) -> Result<TlsContext, TlsConfigError> {
        if let Some(config) = &options.config {
            return TlsContext::from_client_config(config, options);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError(format!("TLS setup: {e}")))?;
        let (verifier, trust): (Arc<dyn ServerCertVerifier>, String) =
            if options.accept_invalid_certs {
                static WARN: Once = Once::new();
                WARN.call_once(|| tracing::warn!("{INSECURE_WARNING}"));
                (
                    Arc::new(AcceptAnyCert(provider.clone())),
                    "nothing (verification is off)".to_string(),
                )
            } else {
                let (roots, trust) = load_roots(&options.ca)?;
                // What `with_root_certificates` builds, kept to be wrapped for QUIC.
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsConfigError(format!("TLS setup: {e}")))?;
                (webpki, trust)
            };
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = options.alpn.clone();

        let identity = match &options.client_cert {
            None => None,
            Some((cert, key)) => {
                let what = format!("client certificate {}", cert.describe());
                let chain = parse_certs(&cert.load("client certificate")?, &what)?;
                let key_pem = key.load("client key")?;
                let key_what = match key {
                    PemSource::File(p) => format!("client key {}", p.display()),
                    PemSource::Inline(_) => "the client key".to_string(),
                };
                let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    TlsConfigError(format!(
                        "no usable private key in {key_what} ({e}; PKCS#8, PKCS#1 and SEC1 PEM are supported, encrypted keys are not)"
                    ))
                })?;
                let signing = provider
                    .key_provider
                    .load_private_key(key_der)
                    .map_err(|e| TlsConfigError(format!("cannot use {key_what}: {e}")))?;
                let certified = CertifiedKey::new(chain, signing);
                if let Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) =
                    certified.keys_match()
                {
                    return Err(TlsConfigError(format!("{key_what} does not match {what}")));
                }
                Some(Arc::new(certified))
            }
        };
        let server_name = match &options.server_name {
            None => None,
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| TlsConfigError(format!("bad TLS server name {n:?}: {e}")))?,
            ),
        };
        Ok(TlsContext {
            config: Arc::new(config),
            verifier: Some(verifier),
            identity,
            own_resolver: None,
            tcp_slots: Arc::default(),
            quic_slots: Arc::default(),
            handshakes: Arc::default(),
            server_name,
            trust,
            verdicts: Arc::default(),
        })
    }

    /// The context of [`TlsOptions::client_config`]: the application's config, as it is, but for
    /// the server name and ALPN of `options`.
    fn from_client_config(
        config: &Arc<ClientConfig>,
        options: &TlsOptions,
    ) -> Result<TlsContext, TlsConfigError> {
        let mixed = [
            (!options.ca.is_empty(), "CA certificates"),
            (options.client_cert.is_some(), "a client certificate"),
            (options.accept_invalid_certs, "danger_accept_invalid_certs"),
        ];
        if let Some((_, what)) = mixed.iter().find(|(set, _)| *set) {
            return Err(TlsConfigError(format!(
                "{what} cannot be combined with a rustls ClientConfig of your own: set it in that config"
            )));
        }
        let mut config = (**config).clone();
        if !options.alpn.is_empty() {
            config.alpn_protocols = options.alpn.clone();
        }
        let server_name = match &options.server_name {
            None => None,
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| TlsConfigError(format!("bad TLS server name {n:?}: {e}")))?,
            ),
        };
        let own_resolver = Some(config.client_auth_cert_resolver.clone());
        Ok(TlsContext {
            config: Arc::new(config),
            verifier: None,
            identity: None,
            own_resolver,
            tcp_slots: Arc::default(),
            quic_slots: Arc::default(),
            handshakes: Arc::default(),
            server_name,
            trust: "the application's rustls ClientConfig".to_string(),
            verdicts: Arc::default(),
        })
    }

    /// Whether certificate refusals are recorded by our own verifier (not with a config of
    /// the application's own, whose verifier cannot be wrapped).
    #[cfg(feature = "quic")]
    pub(crate) fn watches_verifier(&self) -> bool {
        self.verifier.is_some()
    }

    /// Whether a client certificate is configured (by file, PEM or the application's config).
    fn has_cert(&self) -> bool {
        self.identity.is_some() || self.own_resolver.as_ref().is_some_and(|r| r.has_certs())
    }

    /// Hands out the client certificate, noting in `probe` that the server asked for one.
    fn identity_resolver(&self, probe: Arc<HandshakeProbe>) -> Arc<IdentityResolver> {
        Arc::new(IdentityResolver {
            identity: self.identity.clone(),
            own: self.own_resolver.clone(),
            probe,
        })
    }

    /// The handshakes completed so far with this context.
    pub(crate) fn handshakes(&self) -> TlsHandshakes {
        TlsHandshakes {
            full: self.handshakes.full.load(Ordering::Relaxed),
            resumed: self.handshakes.resumed.load(Ordering::Relaxed),
        }
    }

    /// A configuration for TLS over TCP, reused from earlier connects when one is free.
    fn tcp_slot(&self) -> SlotGuard {
        self.tcp_slots.take(|| {
            let probe = Arc::new(HandshakeProbe::default());
            let mut config = (*self.config).clone();
            config.client_auth_cert_resolver = self.identity_resolver(probe.clone());
            config.resumption = Resumption::store(Arc::new(TicketWatch {
                inner: Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE)),
                probe: probe.clone(),
            }));
            Slot {
                config: Arc::new(config),
                probe,
            }
        })
    }

    /// TCP, then the TLS handshake, then (TLS 1.3 with client authentication) the server's
    /// verdict on our certificate.
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<BoxTransport, TransportError> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_string()).map_err(|e| {
                TransportError::TlsFatal(format!(
                    "{host:?} cannot be used as a TLS server name: {e}"
                ))
            })?,
        };
        let tcp = super::tcp::connect_tcp(host, port).await?;
        let slot = self.tcp_slot();
        let probe = slot.probe.clone();
        let connector = tokio_rustls::TlsConnector::from(slot.config.clone());
        let started = tokio::time::Instant::now();
        let stream = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| self.map_error(&e, &name, &probe))?;
        let handshake = started.elapsed();
        self.handshakes
            .count(stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed));
        // The connection keeps its configuration until it is dropped: tickets that arrive
        // later are the ones the next connect resumes with.
        let stream = Held {
            inner: stream,
            slot,
        };
        let tls13 =
            stream.inner.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        if probe.requested.load(Ordering::Relaxed) && tls13 {
            let server = format!("{}:{port}", name_str(&name));
            let wait = {
                let v = lock(&self.verdicts);
                if v.accepted.contains(&server) {
                    None
                } else if v.late_refusal {
                    Some(CLIENT_AUTH_VERDICT_WAIT)
                } else {
                    Some(
                        handshake
                            .saturating_mul(VERDICT_WAIT_PER_HANDSHAKE)
                            .clamp(VERDICT_WAIT_MIN, CLIENT_AUTH_VERDICT_WAIT),
                    )
                }
            };
            let Some(wait) = wait else {
                // Accepted before: go on at once; a refusal now still shows at the first read.
                return Ok(Box::new(self.watch(stream, &name, server)));
            };
            return self
                .await_client_auth_verdict(stream, &name, &probe, wait, server)
                .await;
        }
        Ok(Box::new(stream))
    }

    /// The stream, watched for the server's verdict until the first data from it.
    fn watch<S>(&self, inner: S, name: &ServerName<'_>, server: String) -> VerdictWatch<S> {
        VerdictWatch {
            inner,
            verdicts: Some(self.verdicts.clone()),
            server,
            host: name_str(name),
            have_cert: self.has_cert(),
        }
    }

    /// In TLS 1.3 the client's handshake is done before the server has checked the client
    /// certificate: a refusal arrives as an alert afterwards. Wait briefly (`wait`) for it (or
    /// for a session ticket, which only an accepting server sends) so that a refusal is
    /// reported as fatal instead of as a lost connection that would be retried forever. When
    /// the wait ends without a verdict, the stream goes on watched: a refusal that comes later
    /// makes the next connects wait the whole [`CLIENT_AUTH_VERDICT_WAIT`].
    async fn await_client_auth_verdict(
        &self,
        mut stream: Held<TlsStream<TcpStream>>,
        name: &ServerName<'static>,
        probe: &HandshakeProbe,
        wait: Duration,
        server: String,
    ) -> Result<BoxTransport, TransportError> {
        enum Verdict {
            Accepted,
            NoneYet,
            Data(usize),
            Eof,
            Failed(io::Error),
        }
        let mut buf = vec![0u8; 4096];
        let verdict = {
            let read = poll_fn(|cx| {
                let mut rb = ReadBuf::new(&mut buf);
                match Pin::new(&mut stream).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Verdict::Eof),
                    Poll::Ready(Ok(())) => Poll::Ready(Verdict::Data(rb.filled().len())),
                    Poll::Ready(Err(e)) => Poll::Ready(Verdict::Failed(e)),
                    Poll::Pending if probe.ticket.load(Ordering::Relaxed) => {
                        Poll::Ready(Verdict::Accepted)
                    }
                    Poll::Pending => Poll::Pending,
                }
            });
            tokio::time::timeout(wait, read)
                .await
                .unwrap_or(Verdict::NoneYet)
        };
        match verdict {
            Verdict::Accepted => {
                lock(&self.verdicts).accept(&server);
                Ok(Box::new(stream))
            }
            Verdict::NoneYet => Ok(Box::new(self.watch(stream, name, server))),
            Verdict::Data(n) => {
                lock(&self.verdicts).accept(&server);
                buf.truncate(n);
                Ok(Box::new(Prefixed { prefix: buf, pos: 0, inner: stream }))
            }
            Verdict::Eof => Err(TransportError::Tls(format!(
                "{} closed the connection right after the TLS handshake, in which it asked for a client certificate{}",
                name_str(name),
                if self.has_cert() { "" } else { " (none is configured)" }
            ))),
            Verdict::Failed(e) => Err(self.map_error(&e, name, probe)),
        }
    }

    fn map_error(
        &self,
        e: &io::Error,
        name: &ServerName<'_>,
        probe: &HandshakeProbe,
    ) -> TransportError {
        let host = name_str(name);
        let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return TransportError::Tls(format!("TLS handshake with {host} failed: {e}"));
        };
        match err {
            rustls::Error::InvalidCertificate(ce) => {
                TransportError::TlsFatal(describe_certificate_error(ce, &host, &self.trust))
            }
            rustls::Error::NoCertificatesPresented => TransportError::TlsFatal(format!(
                "no certificate: {host} presented no server certificate"
            )),
            rustls::Error::AlertReceived(alert) => classify_alert(
                *alert,
                &host,
                probe.requested.load(Ordering::Relaxed),
                self.has_cert(),
            ),
            other => TransportError::Tls(format!("TLS handshake with {host} failed: {other}")),
        }
    }
}

/// What a QUIC connect needs from the TLS settings.
#[cfg(feature = "quic")]
impl TlsContext {
    /// The TLS name to verify `host` against: the configured server name, or `host`.
    pub(crate) fn quic_server_name(&self, host: &str) -> Result<String, TransportError> {
        match &self.server_name {
            Some(n) => Ok(name_str(n)),
            None => ServerName::try_from(host.to_string())
                .map(|n| name_str(&n))
                .map_err(|e| {
                    TransportError::TlsFatal(format!(
                        "{host:?} cannot be used as a TLS server name: {e}"
                    ))
                }),
        }
    }

    /// A rustls configuration for QUIC, reused from earlier connects when one is free: the
    /// same trust, client certificate and verification as TLS over TCP, ALPN `mqtt` only, its
    /// own session cache, no early data (0-RTT). What the handshake learns goes to the slot's
    /// probe, for [`quic_handshake_error`](Self::quic_handshake_error).
    pub(crate) fn quic_slot(&self) -> SlotGuard {
        self.quic_slots.take(|| {
            let probe = Arc::new(HandshakeProbe::default());
            let mut config = (*self.config).clone();
            if let Some(verifier) = &self.verifier {
                config
                    .dangerous()
                    .set_certificate_verifier(Arc::new(RecordingVerifier {
                        inner: verifier.clone(),
                        probe: probe.clone(),
                    }));
            }
            config.client_auth_cert_resolver = self.identity_resolver(probe.clone());
            config.resumption =
                Resumption::store(Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE)));
            config.alpn_protocols = vec![b"mqtt".to_vec()];
            config.enable_early_data = false;
            Slot {
                config: Arc::new(config),
                probe,
            }
        })
    }

    /// Counts a completed QUIC handshake, full or resumed.
    pub(crate) fn count_quic_handshake(&self, slot: &SlotGuard) {
        self.handshakes.count(slot.resumed());
    }

    /// A failed QUIC handshake as a TLS error, when TLS was the cause: our verifier refused
    /// the server's certificate (fatal, named as for TLS over TCP), or the server ended the
    /// handshake with TLS alert `alert` (fatal when it is about our client certificate).
    pub(crate) fn quic_handshake_error(
        &self,
        slot: &SlotGuard,
        host: &str,
        alert: Option<u8>,
    ) -> Option<TransportError> {
        let refused = lock(&slot.probe.refused).clone();
        if let Some(e) = refused {
            return Some(TransportError::TlsFatal(describe_certificate_error(
                &e,
                host,
                &self.trust,
            )));
        }
        alert.map(|a| {
            classify_alert(
                AlertDescription::from(a),
                host,
                slot.probe.requested.load(Ordering::Relaxed),
                self.has_cert(),
            )
        })
    }
}

/// How long a QUIC connect waits for the server's verdict on the client certificate after a
/// handshake of `handshake`: as for TLS 1.3 over TCP, four handshakes, within
/// [`VERDICT_WAIT_MIN`] and [`CLIENT_AUTH_VERDICT_WAIT`].
#[cfg(feature = "quic")]
pub(crate) fn quic_verdict_wait(handshake: Duration) -> Duration {
    handshake
        .saturating_mul(VERDICT_WAIT_PER_HANDSHAKE)
        .clamp(VERDICT_WAIT_MIN, CLIENT_AUTH_VERDICT_WAIT)
}

/// A verifier that remembers why it refused a certificate (QUIC reports the refusal only as
/// a TLS alert code).
#[cfg(feature = "quic")]
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    probe: Arc<HandshakeProbe>,
}

#[cfg(feature = "quic")]
impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.probe.verified.store(true, Ordering::Relaxed);
        let r = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Err(rustls::Error::InvalidCertificate(e)) = &r {
            *lock(&self.probe.refused) = Some(e.clone());
        }
        r
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

fn load_roots(ca: &[PemSource]) -> Result<(RootCertStore, String), TlsConfigError> {
    let mut roots = RootCertStore::empty();
    if ca.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
            return Err(TlsConfigError(format!(
                "no usable system root certificates found{}; give a CA file",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", why.join("; "))
                }
            )));
        }
        return Ok((roots, "the system root certificates".into()));
    }
    let mut names = Vec::new();
    for src in ca {
        let what = format!("CA file {}", src.describe());
        for cert in parse_certs(&src.load("CA file")?, &what)? {
            roots
                .add(cert)
                .map_err(|e| TlsConfigError(format!("unusable CA certificate in {what}: {e}")))?;
        }
        names.push(what);
    }
    Ok((roots, names.join(", ")))
}

/// The host a server name stands for, as text.
fn name_str(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// A precise message for a rejected server certificate. It starts with the kind of problem
/// (`certificate expired`, `unknown issuer`, `name mismatch`, ...).
fn describe_certificate_error(e: &CertificateError, host: &str, trust: &str) -> String {
    match e {
        CertificateError::Expired => format!("certificate expired: the certificate of {host} has expired"),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "certificate expired: the certificate of {host} was valid until {}; it is now {}",
            utc(not_after),
            utc(time)
        ),
        CertificateError::NotValidYet => {
            format!("certificate not yet valid: the certificate of {host} is not valid yet")
        }
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "certificate not yet valid: the certificate of {host} is valid from {}; it is now {}",
            utc(not_before),
            utc(time)
        ),
        CertificateError::UnknownIssuer => format!(
            "unknown issuer: the certificate of {host} is not signed by a trusted authority (trusted: {trust})"
        ),
        CertificateError::NotValidForName => {
            format!("name mismatch: the server certificate is not valid for {host}")
        }
        CertificateError::NotValidForNameContext { expected, presented } => format!(
            "name mismatch: the server certificate is not valid for {} (it is valid for {})",
            name_str(expected),
            if presented.is_empty() {
                "no name".to_string()
            } else {
                // rustls gives `DnsName("a.example")`; keep the name.
                presented.iter().map(|p| p.split('"').nth(1).unwrap_or(p)).collect::<Vec<_>>().join(", ")
            }
        ),
        CertificateError::Revoked => format!("certificate revoked: the certificate of {host} is revoked"),
        CertificateError::BadSignature => {
            format!("bad signature: the certificate of {host} has an invalid signature")
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!("invalid purpose: the certificate of {host} is not valid for TLS server authentication")
        }
        CertificateError::BadEncoding => format!("bad certificate: the certificate of {host} is malformed"),
        other => format!(
            "certificate rejected: the certificate of {host}: {}",
            rustls::Error::InvalidCertificate(other.clone())
        ),
    }
}

/// A fatal alert from the server during the handshake (or right after it, in TLS 1.3).
fn classify_alert(
    alert: AlertDescription,
    host: &str,
    cert_requested: bool,
    have_cert: bool,
) -> TransportError {
    use AlertDescription as A;
    let about_client_cert = matches!(
        alert,
        A::CertificateRequired
            | A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
    ) || (alert == A::HandshakeFailure && cert_requested);
    if alert == A::CertificateRequired || (about_client_cert && cert_requested && !have_cert) {
        return TransportError::TlsFatal(format!(
            "client certificate required: {host} requires a client certificate (mutual TLS) and none is configured (alert: {alert:?})"
        ));
    }
    if about_client_cert && cert_requested {
        return TransportError::TlsFatal(format!(
            "client certificate rejected: {host} refused our client certificate (alert: {alert:?})"
        ));
    }
    TransportError::Tls(format!(
        "{host} aborted the TLS handshake (alert: {alert:?})"
    ))
}

/// `YYYY-MM-DD hh:mm:ss UTC`.
fn utc(t: &UnixTime) -> String {
    let secs = t.as_secs();
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2));
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// What the latest handshake of a [`Slot`] learned; reset when a connect takes the slot.
#[derive(Debug, Default)]
struct HandshakeProbe {
    /// The server sent a CertificateRequest.
    requested: AtomicBool,
    /// The server sent a TLS 1.3 session ticket (it accepted the handshake).
    ticket: AtomicBool,
    /// The server's certificate was verified (QUIC only): a full handshake.
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    verified: AtomicBool,
    /// Why the server's certificate was refused (QUIC only: QUIC reports the refusal only as
    /// a TLS alert code).
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    refused: Mutex<Option<CertificateError>>,
}

impl HandshakeProbe {
    fn reset(&self) {
        self.requested.store(false, Ordering::Relaxed);
        self.ticket.store(false, Ordering::Relaxed);
        self.verified.store(false, Ordering::Relaxed);
        *lock(&self.refused) = None;
    }
}

/// Hands out the configured client certificate and notes that the server asked for one.
struct IdentityResolver {
    identity: Option<Arc<CertifiedKey>>,
    /// The resolver of the application's own config, asked when `identity` is `None`.
    own: Option<Arc<dyn ResolvesClientCert>>,
    probe: Arc<HandshakeProbe>,
}

impl fmt::Debug for IdentityResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityResolver")
            .field("has_cert", &self.has_certs())
            .finish_non_exhaustive()
    }
}

impl ResolvesClientCert for IdentityResolver {
    fn resolve(
        &self,
        root_hints: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.probe.requested.store(true, Ordering::Relaxed);
        match (&self.identity, &self.own) {
            (Some(identity), _) => Some(identity.clone()),
            (None, Some(own)) => own.resolve(root_hints, sigschemes),
            (None, None) => None,
        }
    }

    fn has_certs(&self) -> bool {
        self.identity.is_some() || self.own.as_ref().is_some_and(|r| r.has_certs())
    }
}

/// The connector's session cache, noting when this connection receives a TLS 1.3 ticket.
#[derive(Debug)]
struct TicketWatch {
    inner: Arc<dyn ClientSessionStore>,
    probe: Arc<HandshakeProbe>,
}

impl ClientSessionStore for TicketWatch {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(server_name, value)
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.probe.ticket.store(true, Ordering::Relaxed);
        self.inner.insert_tls13_ticket(server_name, value)
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

/// `danger_accept_invalid_certs`: any certificate is accepted, but handshake signatures are
/// still checked (the peer must hold the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A stream with bytes already read from it put back in front.
struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.prefix[from..from + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream whose server had not given its verdict on our client certificate when the
/// connect went on. Until the first data from the server it watches the reads: data means
/// accepted (remembered, so later connects do not wait); a certificate alert or an end of
/// stream means refused, and makes later connects wait the whole verdict time. A certificate
/// alert is carried to the driver whole (a `TransportError::TlsFatal` inside the `io::Error`),
/// so it is reported as the fatal refusal it is on this very attempt. An end of stream alone
/// cannot be told from a broker that simply closed: the next attempt waits for the verdict.
struct VerdictWatch<S> {
    inner: S,
    /// `None` once the verdict is known.
    verdicts: Option<Arc<Mutex<Verdicts>>>,
    /// `host:port`.
    server: String,
    host: String,
    have_cert: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for VerdictWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Poll::Ready(result) = r else {
            return Poll::Pending;
        };
        let Some(verdicts) = self.verdicts.take() else {
            return Poll::Ready(result);
        };
        let mut v = lock(&verdicts);
        match result {
            Ok(()) if buf.filled().len() > before => {
                v.accept(&self.server);
                Poll::Ready(Ok(()))
            }
            Ok(()) => {
                v.refused_late(&self.server);
                Poll::Ready(Ok(()))
            }
            Err(e) => {
                let alert = e
                    .get_ref()
                    .and_then(|i| match i.downcast_ref::<rustls::Error>() {
                        Some(rustls::Error::AlertReceived(a)) => Some(*a),
                        _ => None,
                    });
                let fatal = alert.map(|a| classify_alert(a, &self.host, true, self.have_cert));
                match fatal {
                    Some(fatal @ TransportError::TlsFatal(_)) => {
                        v.refused_late(&self.server);
                        // Carried whole, so the driver reports it as the fatal refusal it is.
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::PermissionDenied, fatal)))
                    }
                    _ => Poll::Ready(Err(e)),
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for VerdictWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read side that gives one result, then stays pending; writes are swallowed.
    struct OneRead(Option<io::Result<Vec<u8>>>);

    impl AsyncRead for OneRead {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.0.take() {
                Some(Ok(b)) => {
                    buf.put_slice(&b);
                    Poll::Ready(Ok(()))
                }
                Some(Err(e)) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            }
        }
    }

    fn watched(
        first: io::Result<Vec<u8>>,
        verdicts: &Arc<Mutex<Verdicts>>,
    ) -> VerdictWatch<OneRead> {
        VerdictWatch {
            inner: OneRead(Some(first)),
            verdicts: Some(verdicts.clone()),
            server: "broker:8883".into(),
            host: "broker".into(),
            have_cert: true,
        }
    }

    fn read_once(w: &mut VerdictWatch<OneRead>) -> io::Result<Vec<u8>> {
        let mut buf = [0u8; 16];
        let mut rb = ReadBuf::new(&mut buf);
        let waker = std::task::Waker::noop();
        match Pin::new(w).poll_read(&mut Context::from_waker(waker), &mut rb) {
            Poll::Ready(Ok(())) => Ok(rb.filled().to_vec()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => panic!("pending"),
        }
    }

    /// Data after an unconfirmed handshake means accepted: later connects skip the wait. A
    /// certificate alert instead means refused: the error names it, the server is forgotten,
    /// and later connects wait the whole verdict time.
    #[test]
    fn a_verdict_after_the_wait_is_remembered() {
        let verdicts = Arc::new(Mutex::new(Verdicts::default()));
        let mut w = watched(Ok(b"\x20\x02\x00\x00".to_vec()), &verdicts);
        assert_eq!(read_once(&mut w).unwrap(), b"\x20\x02\x00\x00");
        assert_eq!(lock(&verdicts).accepted, ["broker:8883"]);
        assert!(!lock(&verdicts).late_refusal);

        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        let mut w = watched(Err(alert), &verdicts);
        let e = read_once(&mut w).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        // The refusal travels whole, as the fatal transport error the driver reports.
        let carried = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<TransportError>())
            .cloned();
        match carried {
            Some(TransportError::TlsFatal(why)) => assert!(
                why.starts_with("client certificate rejected: broker refused"),
                "{why}"
            ),
            other => panic!("not carried as TlsFatal: {other:?} ({e})"),
        }
        assert!(lock(&verdicts).accepted.is_empty());
        assert!(lock(&verdicts).late_refusal);

        // Another error is passed on as it is and teaches nothing.
        let verdicts = Arc::new(Mutex::new(Verdicts::default()));
        let mut w = watched(Err(io::ErrorKind::ConnectionReset.into()), &verdicts);
        assert_eq!(
            read_once(&mut w).unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        assert!(!lock(&verdicts).late_refusal);
        assert!(lock(&verdicts).accepted.is_empty());
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(
            utc(&UnixTime::since_unix_epoch(Duration::ZERO)),
            "1970-01-01 00:00:00 UTC"
        );
        assert_eq!(
            utc(&UnixTime::since_unix_epoch(Duration::from_secs(
                951_782_400 + 3661
            ))),
            "2000-02-29 01:01:01 UTC"
        );
        assert_eq!(
            utc(&UnixTime::since_unix_epoch(Duration::from_secs(
                1_767_225_599
            ))),
            "2025-12-31 23:59:59 UTC"
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let o = TlsOptions::new().client_cert_pem(
            "-----BEGIN CERTIFICATE-----",
            "-----BEGIN PRIVATE KEY-----SECRETKEY",
        );
        let s = format!("{o:?}");
        assert!(!s.contains("SECRETKEY"), "{s}");
        assert!(s.contains("<redacted>"), "{s}");
        assert!(s.contains("system roots"), "{s}");
    }

    #[test]
    fn bad_files_fail_at_build() {
        let e = TlsContext::new(&TlsOptions::new().ca_file("/nonexistent/ca.pem"))
            .err()
            .unwrap();
        assert!(
            e.0.contains("cannot read CA file /nonexistent/ca.pem"),
            "{e}"
        );
        let e = TlsContext::new(&TlsOptions::new().ca_pem("not pem"))
            .err()
            .unwrap();
        assert!(e.0.contains("no certificate found"), "{e}");
        let e = TlsContext::new(&TlsOptions::new().server_name("not a name!"))
            .err()
            .unwrap();
        assert!(e.0.contains("bad TLS server name"), "{e}");
    }

    #[tokio::test]
    async fn prefixed_bytes_come_first() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(64);
        let mut p = Prefixed {
            prefix: b"abc".to_vec(),
            pos: 0,
            inner: a,
        };
        b.write_all(b"def").await.unwrap();
        drop(b);
        let mut out = Vec::new();
        p.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"abcdef");
    }

    #[test]
    fn alerts_about_client_certificates_are_fatal() {
        let missing = classify_alert(AlertDescription::CertificateRequired, "h", true, false);
        assert!(
            matches!(&missing, TransportError::TlsFatal(m) if m.contains("client certificate required"))
        );
        let refused = classify_alert(AlertDescription::UnknownCA, "h", true, true);
        assert!(
            matches!(&refused, TransportError::TlsFatal(m) if m.contains("client certificate rejected"))
        );
        let other = classify_alert(AlertDescription::HandshakeFailure, "h", false, false);
        assert!(matches!(other, TransportError::Tls(_)));
    }
}
