//! TLS setters of [`ClientBuilder`], for `mqtts://`, `ssl://` and `wss://` servers.
//!
//! They fill a [`TlsOptions`]; at [`ClientBuilder::build`] the files are read and checked and
//! a [`DefaultConnector`](crate::transport::DefaultConnector) with those options becomes the
//! connector (replacing one given to [`ClientBuilder::connector`]).

use std::path::PathBuf;

use crate::builder::ClientBuilder;
use crate::transport::TlsOptions;

impl ClientBuilder {
    fn tls_with(mut self, f: impl FnOnce(TlsOptions) -> TlsOptions) -> Self {
        self.tls = Some(f(self.tls.take().unwrap_or_default()));
        self
    }

    /// All TLS settings at once (replaces those set before).
    ///
    /// ```no_run
    /// # fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use steadfast::{transport::TlsOptions, ClientBuilder};
    /// let builder = ClientBuilder::from_url("mqtts://broker.example:8883")?
    ///     .tls(TlsOptions::new().ca_file("ca.pem").client_cert_files("client.pem", "client.key"));
    /// # let _ = builder; Ok(()) }
    /// ```
    pub fn tls(self, options: TlsOptions) -> Self {
        self.tls_with(|_| options)
    }

    /// Uses a rustls [`ClientConfig`](rustls::ClientConfig) of your own for `mqtts://`,
    /// `ssl://` and `wss://` (and `quic://`) servers instead of the file options; see
    /// [`TlsOptions::client_config`] for what is used as it is and what cannot be combined
    /// with it. The `rustls` crate is re-exported as [`steadfast::transport::rustls`], so the
    /// versions match.
    ///
    /// ```no_run
    /// # fn f(roots: steadfast::transport::rustls::RootCertStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use steadfast::transport::rustls;
    /// use steadfast::ClientBuilder;
    ///
    /// let config = rustls::ClientConfig::builder_with_provider(Arc::new(
    ///     rustls::crypto::ring::default_provider(),
    /// ))
    /// .with_safe_default_protocol_versions()?
    /// .with_root_certificates(roots)
    /// .with_no_client_auth();
    /// let (client, events) = ClientBuilder::from_url("mqtts://broker.example:8883")?
    ///     .tls_client_config(Arc::new(config))
    ///     .build()?;
    /// # let _ = (client, events); Ok(()) }
    /// ```
    ///
    /// [`steadfast::transport::rustls`]: crate::transport::rustls
    pub fn tls_client_config(self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls_with(|o| o.client_config(config))
    }

    /// Trusts the CA certificates in this PEM file instead of the system roots (repeatable);
    /// see [`TlsOptions::ca_file`].
    pub fn ca_file(self, path: impl Into<PathBuf>) -> Self {
        self.tls_with(|o| o.ca_file(path))
    }

    /// Trusts the CA certificates in this PEM text; see [`TlsOptions::ca_pem`].
    pub fn ca_pem(self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_with(|o| o.ca_pem(pem))
    }

    /// Mutual TLS with a client certificate chain and private key (PEM files); see
    /// [`TlsOptions::client_cert_files`].
    pub fn client_cert(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_with(|o| o.client_cert_files(cert, key))
    }

    /// Mutual TLS with the chain and key as PEM text; see [`TlsOptions::client_cert_pem`].
    pub fn client_cert_pem(self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls_with(|o| o.client_cert_pem(cert, key))
    }

    /// Accepts any server certificate (tests only): logs the warning
    /// `WARNING: TLS certificate verification is disabled` (a `tracing` event at level WARN)
    /// once per process. See
    /// [`TlsOptions::danger_accept_invalid_certs`].
    pub fn danger_accept_invalid_certs(self, on: bool) -> Self {
        self.tls_with(|o| o.danger_accept_invalid_certs(on))
    }

    /// The TLS server name (SNI and certificate check) instead of the URL's host; see
    /// [`TlsOptions::server_name`].
    pub fn tls_server_name(self, name: impl Into<String>) -> Self {
        self.tls_with(|o| o.server_name(name))
    }

    /// ALPN protocols to offer; see [`TlsOptions::alpn_protocols`].
    pub fn alpn_protocols<I, P>(self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<Vec<u8>>,
    {
        self.tls_with(|o| o.alpn_protocols(protocols))
    }

    /// The TLS settings so far (`None` when no TLS setter was used: the defaults apply).
    pub fn tls_options(&self) -> Option<&TlsOptions> {
        self.tls.as_ref()
    }
}
