//! `mqtts://` against private Mosquitto brokers with TLS listeners and a test PKI generated at
//! run time: a good certificate, an expired one, one for another host, one from an unknown
//! CA, mutual TLS with and without a client certificate, insecure mode, reconnection after
//! a broker crash, and no password in any `Debug` output.
//!
//! Feature `tls` (on by default).
#![cfg(feature = "tls")]

mod transport_support;

use std::time::Duration;

use steadfast::proto::TransportError;
use steadfast::transport::TlsOptions;
use steadfast::Message;
use steadfast::{BuildError, ClientBuilder, Constant, Lifecycle, QoS, Reason, State};
use transport_support::*;

fn url(broker: &Mosquitto) -> String {
    format!("mqtts://127.0.0.1:{}", broker.port())
}

/// Test-friendly settings: quick retries. (That a fatal TLS error is never retried is proved
/// on virtual time: `driver_absence::a_tls_certificate_rejection_is_never_retried`.)
fn quick(b: ClientBuilder) -> ClientBuilder {
    b.backoff(Constant::new(Duration::from_millis(100)))
        .connect_timeout(Duration::from_secs(5))
        .keep_alive(Duration::from_secs(5))
}

/// Builds a client that must fail fatally at its first attempt, and returns the message.
async fn fatal_tls_message(builder: ClientBuilder, broker: &Mosquitto) -> String {
    let (client, events) = quick(builder).build().expect("build");
    let mut log = Log::new(events);
    let fatal = log
        .lifecycle("Fatal", T, |e| matches!(e, Lifecycle::Fatal { .. }))
        .await;
    let Lifecycle::Fatal { reason } = fatal else {
        unreachable!()
    };
    let Reason::Transport(TransportError::TlsFatal(message)) = reason else {
        panic!("expected TlsFatal, got {reason:?}; log:\n{}", log.dump())
    };
    assert_eq!(client.state(), State::Failed);
    assert_eq!(
        log.attempts(),
        1,
        "exactly one connect attempt before the verdict; log:\n{}",
        log.dump()
    );
    // The broker logs its side of the failed handshake when it reads the client's alert.
    let deadline = tokio::time::Instant::now() + T;
    while broker_failed_handshakes(broker) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_broker = broker_failed_handshakes(broker);
    assert_eq!(
        at_broker,
        1,
        "the broker saw {at_broker} failed handshakes; its log:\n{}",
        broker.log()
    );
    eprintln!("TlsFatal after 1 attempt: {message}");
    message
}

#[test]
fn good_certificate_publish_subscribe_round_trip() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.server, false);
        let topic = uid("tls/rt");
        let (sub, events) = quick(ClientBuilder::from_url(&url(&broker)).unwrap())
            .ca_file(&pki.ca)
            .build()
            .unwrap();
        let mut sub_log = Log::new(events);
        sub_log.connected().await;
        assert_eq!(
            sub.subscribe(topic.as_str(), QoS::AtLeastOnce).await,
            Ok(QoS::AtLeastOnce)
        );

        // Through `localhost` (name check by DNS name) and with the CA given as PEM text.
        let (publisher, events) =
            quick(ClientBuilder::from_url(&format!("ssl://localhost:{}", broker.port())).unwrap())
                .ca_pem(pki.ca_pem.clone())
                .build()
                .unwrap();
        let mut pub_log = Log::new(events);
        pub_log.connected().await;
        for i in 0..3 {
            publisher
                .send(Message::new(topic.as_str(), format!("hello {i}")).qos(QoS::AtLeastOnce))
                .await
                .expect("publish");
        }
        for i in 0..3 {
            assert_eq!(
                sub_log.message(&topic).await,
                format!("hello {i}").into_bytes()
            );
        }
        publisher.disconnect().await.unwrap();
        sub.disconnect().await.unwrap();
    });
}

#[test]
fn expired_certificate_is_fatal_without_retry() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.expired, false);
        let b = ClientBuilder::from_url(&url(&broker))
            .unwrap()
            .ca_file(&pki.ca);
        let message = fatal_tls_message(b, &broker).await;
        assert!(message.starts_with("certificate expired"), "{message}");
        assert!(message.contains("valid until 2021-01-01"), "{message}");
    });
}

#[test]
fn wrong_host_name_is_fatal_name_mismatch() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.wrong_host, false);
        let b = ClientBuilder::from_url(&url(&broker))
            .unwrap()
            .ca_file(&pki.ca);
        let message = fatal_tls_message(b, &broker).await;
        assert!(message.starts_with("name mismatch"), "{message}");
        assert!(
            message.contains("127.0.0.1") && message.contains("wrong.example"),
            "{message}"
        );
    });
}

#[test]
fn server_name_override_matches_the_certificate() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.wrong_host, false);
        let (client, events) = quick(ClientBuilder::from_url(&url(&broker)).unwrap())
            .ca_file(&pki.ca)
            .tls_server_name("wrong.example")
            .build()
            .unwrap();
        let mut log = Log::new(events);
        log.connected().await;
        client.disconnect().await.unwrap();
    });
}

#[test]
fn unknown_ca_is_fatal_unknown_issuer() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.unknown_ca, false);
        let b = ClientBuilder::from_url(&url(&broker))
            .unwrap()
            .ca_file(&pki.ca);
        let message = fatal_tls_message(b, &broker).await;
        assert!(message.starts_with("unknown issuer"), "{message}");
        assert!(
            message.contains(&pki.ca.display().to_string()),
            "names the trusted CA file: {message}"
        );
    });
}

#[test]
fn system_roots_do_not_trust_the_test_ca() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.server, false);
        let b = ClientBuilder::from_url(&url(&broker)).unwrap();
        let message = fatal_tls_message(b, &broker).await;
        assert!(message.starts_with("unknown issuer"), "{message}");
        assert!(message.contains("system root certificates"), "{message}");
    });
}

#[test]
fn mutual_tls_with_client_certificate_works() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.server, true);
        let topic = uid("tls/mtls");
        let (client, events) = quick(ClientBuilder::from_url(&url(&broker)).unwrap())
            .ca_file(&pki.ca)
            .client_cert(&pki.client.cert, &pki.client.key)
            .build()
            .unwrap();
        let mut log = Log::new(events);
        let started = std::time::Instant::now();
        log.connected().await;
        let took = started.elapsed();
        assert_eq!(
            client.subscribe(topic.as_str(), QoS::AtLeastOnce).await,
            Ok(QoS::AtLeastOnce)
        );
        client
            .send(Message::new(topic.as_str(), "mtls").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(log.message(&topic).await, b"mtls");
        // The broker's session ticket confirms acceptance: no wait for a verdict timeout.
        assert!(
            took < Duration::from_millis(900),
            "mTLS connect took {took:?}"
        );
        client.disconnect().await.unwrap();

        // The same identity given as PEM text.
        let (client, events) = quick(ClientBuilder::from_url(&url(&broker)).unwrap())
            .tls(
                TlsOptions::new()
                    .ca_pem(pki.ca_pem.clone())
                    .client_cert_pem(pki.client.cert_pem.clone(), pki.client.key_pem.clone()),
            )
            .build()
            .unwrap();
        Log::new(events).connected().await;
        client.disconnect().await.unwrap();
    });
}

#[test]
fn missing_client_certificate_is_fatal() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.server, true);
        let b = ClientBuilder::from_url(&url(&broker))
            .unwrap()
            .ca_file(&pki.ca);
        let message = fatal_tls_message(b, &broker).await;
        assert!(
            message.starts_with("client certificate required"),
            "{message}"
        );
    });
}

/// A handshake failure that is not about certificates (here: no TLS 1.3 cipher suite in
/// common, the broker offering only CCM-8 which rustls does not implement) is
/// `TransportError::Tls`: retried, not fatal.
#[test]
fn handshake_failure_without_certificate_problem_is_retried() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker_with(
            &pki,
            &pki.server,
            false,
            "ciphers_tls1.3 TLS_AES_128_CCM_8_SHA256\n",
        );
        let (client, events) = quick(ClientBuilder::from_url(&url(&broker)).unwrap())
            .ca_file(&pki.ca)
            .build()
            .unwrap();
        let mut log = Log::new(events);
        let failed = log
            .lifecycle("ConnectFailed", T, |e| {
                matches!(e, Lifecycle::ConnectFailed { .. })
            })
            .await;
        let Lifecycle::ConnectFailed {
            reason: Reason::Transport(TransportError::Tls(message)),
            ..
        } = failed
        else {
            panic!("expected a TransportError::Tls, got {failed:?}")
        };
        assert!(message.contains("HandshakeFailure"), "{message}");
        log.lifecycle("a second attempt", T, |e| {
            matches!(e, Lifecycle::Connecting { attempt: 2, .. })
        })
        .await;
        assert_ne!(client.state(), State::Failed);
        client.disconnect().await.unwrap();
    });
}

#[test]
fn client_certificate_from_unknown_ca_is_fatal() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.server, true);
        let b = ClientBuilder::from_url(&url(&broker))
            .unwrap()
            .ca_file(&pki.ca)
            .client_cert(&pki.rogue_client.cert, &pki.rogue_client.key);
        let message = fatal_tls_message(b, &broker).await;
        assert!(
            message.starts_with("client certificate rejected"),
            "{message}"
        );
    });
}

#[test]
fn bad_tls_files_fail_at_build() {
    let pki = Pki::generate();
    let Err(err) = ClientBuilder::from_url("mqtts://127.0.0.1:1")
        .unwrap()
        .ca_file(pki.dir.path().join("missing.pem"))
        .build()
    else {
        panic!("a missing CA file fails the build")
    };
    let BuildError::Tls(tls) = &err else {
        panic!("a TLS settings error: {err:?}")
    };
    assert!(tls.0.contains("cannot read CA file"), "{err}");
    let source = std::error::Error::source(&err).expect("the TLS error is the source");
    assert!(source.to_string().contains("cannot read CA file"));
    let Err(err) = ClientBuilder::from_url("mqtts://127.0.0.1:1")
        .unwrap()
        .ca_file(&pki.ca)
        .client_cert(&pki.client.cert, &pki.server.key)
        .build()
    else {
        panic!("a key of another certificate fails the build")
    };
    assert!(
        matches!(&err, BuildError::Tls(e) if e.0.contains("does not match")),
        "{err}"
    );
}

/// The insecure-mode test runs in a child process (this test binary, filtered to
/// `insecure_child`) so that its log can be checked for the warning: the child sends the
/// library's `tracing` events to its stderr.
#[test]
fn insecure_mode_connects_to_wrong_host_and_warns_once() {
    let pki = Pki::generate();
    let broker = tls_broker(&pki, &pki.wrong_host, false);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "insecure_child",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("STEADFAST_INSECURE_CHILD_URL", url(&broker))
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child test ran:\n{stdout}");
    let warnings = stderr
        .matches("WARNING: TLS certificate verification is disabled")
        .count();
    assert_eq!(
        warnings, 1,
        "one warning for two insecure clients:\n{stderr}"
    );
}

/// The child half of the test above; does nothing when run on its own.
#[test]
fn insecure_child() {
    let Ok(url) = std::env::var("STEADFAST_INSECURE_CHILD_URL") else {
        return;
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    run(Duration::from_secs(20), async move {
        for _ in 0..2 {
            let topic = uid("tls/insecure");
            let (client, events) = quick(ClientBuilder::from_url(&url).unwrap())
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap();
            let mut log = Log::new(events);
            log.connected().await;
            client
                .subscribe(topic.as_str(), QoS::AtMostOnce)
                .await
                .unwrap();
            client
                .send(Message::new(topic.as_str(), "insecure").qos(QoS::AtLeastOnce))
                .await
                .unwrap();
            assert_eq!(log.message(&topic).await, b"insecure");
            client.disconnect().await.unwrap();
        }
    });
}

#[test]
fn reconnects_and_resubscribes_after_broker_kill9() {
    run(Duration::from_secs(40), async {
        let pki = Pki::generate();
        let mut broker = tls_broker(&pki, &pki.server, false);
        let topic = uid("tls/k9");
        let (client, events) = quick(ClientBuilder::from_url(&url(&broker)).unwrap())
            .ca_file(&pki.ca)
            .build()
            .unwrap();
        let mut log = Log::new(events);
        log.connected().await;
        assert_eq!(
            client.subscribe(topic.as_str(), QoS::AtLeastOnce).await,
            Ok(QoS::AtLeastOnce)
        );

        tokio::task::block_in_place(|| broker.kill9());
        log.lifecycle("ConnectionLost", T, |e| {
            matches!(e, Lifecycle::ConnectionLost { .. })
        })
        .await;
        log.lifecycle("ConnectFailed", T, |e| {
            matches!(e, Lifecycle::ConnectFailed { .. })
        })
        .await;
        tokio::task::block_in_place(|| broker.restart()).expect("restart");
        log.connected().await;
        log.lifecycle("Resubscribed", T, |e| {
            matches!(e, Lifecycle::Resubscribed { .. })
        })
        .await;
        log.sync(&client, &topic).await;

        let (publisher, events) = quick(ClientBuilder::from_url(&url(&broker)).unwrap())
            .ca_file(&pki.ca)
            .build()
            .unwrap();
        Log::new(events).connected().await;
        publisher
            .send(Message::new(topic.as_str(), "after restart").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        log.payload(&topic, b"after restart").await;
        publisher.disconnect().await.unwrap();
        client.disconnect().await.unwrap();
    });
}

#[test]
fn password_in_url_never_appears_in_debug_output() {
    run(Duration::from_secs(30), async {
        const SECRET: &str = "s3cret";
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.server, false);
        let topic = uid("tls/secret");
        let builder = quick(
            ClientBuilder::from_url(&format!(
                "mqtts://user:{SECRET}@127.0.0.1:{}",
                broker.port()
            ))
            .unwrap(),
        )
        .ca_file(&pki.ca)
        .client_cert_pem(pki.client.cert_pem.clone(), pki.client.key_pem.clone());
        let mut printed = vec![
            format!("{builder:?}"),
            format!("{:?}", builder.config()),
            format!("{:?}", builder.tls_options()),
        ];
        assert_eq!(
            builder.config().servers[0]
                .credentials()
                .and_then(|c| c.password.as_ref())
                .map(|p| p.expose().to_vec()),
            Some(SECRET.as_bytes().to_vec()),
            "the URL password is used"
        );
        let (client, events) = builder.build().unwrap();
        let mut log = Log::new(events);
        log.connected().await;
        client
            .subscribe(topic.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        client
            .send(Message::new(topic.as_str(), "x").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        log.message(&topic).await;
        printed.push(format!("{client:?}"));
        client.disconnect().await.unwrap();
        log.lifecycle("Disconnected", T, |e| *e == Lifecycle::Disconnected)
            .await;
        printed.extend(log.debug.iter().cloned());
        assert!(printed.len() > 5);
        let key_line = pki.client.key_pem.lines().nth(1).unwrap().to_string();
        for text in &printed {
            assert!(!text.contains(SECRET), "password printed: {text}");
            assert!(!text.contains(&key_line), "key material printed: {text}");
        }
    });
}

/// A TLS server that requires a client certificate from the test CA and sends no session
/// ticket; it echoes what it reads.
async fn ticketless_mtls_echo(pki: &Pki) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = tokio_rustls::TlsAcceptor::from(mtls_server_config(&pki.server, &pki.ca_pem, 0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// After a TLS 1.3 handshake with a client certificate, the client waits for the server's
/// verdict (a session ticket, or an alert). A server that accepts and sends no ticket sends
/// nothing more, and the wait used to last 1 s on every connect. On tokio's paused clock
/// (which jumps straight to the next timer when nothing else can run), the connect's virtual
/// duration is exactly the wait: under 1 s at the first connect, and none at all once the
/// server has shown (here: by answering) that it accepted the certificate.
#[test]
fn client_cert_connect_to_a_server_without_session_tickets_does_not_stall() {
    use steadfast::transport::{Connector, DefaultConnector};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = Pki::generate();
        let port = ticketless_mtls_echo(&pki).await;
        let connector = DefaultConnector::with_tls(
            TlsOptions::new()
                .ca_file(&pki.ca)
                .client_cert_files(&pki.client.cert, &pki.client.key),
        )
        .unwrap();
        let url = steadfast::ServerAddr::parse_url(&format!("mqtts://127.0.0.1:{port}")).unwrap();
        let mut waits = Vec::new();
        for i in 0..3u8 {
            let started = tokio::time::Instant::now();
            let mut stream = connector.connect(&url).await.expect("connect");
            waits.push(started.elapsed());
            // The server accepted the certificate: it answers.
            stream.write_all(&[b'p', i]).await.unwrap();
            let mut back = [0u8; 2];
            stream.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [b'p', i]);
        }
        assert!(waits[0] < Duration::from_secs(1), "{waits:?}");
        assert_eq!(waits[1..], [Duration::ZERO, Duration::ZERO], "{waits:?}");
    });
}

/// A rustls `ClientConfig` of the application's own (built with the re-exported `rustls`),
/// with the test CA as its only root and the client certificate in it.
fn own_client_config(
    pki: &Pki,
    roots_pem: &str,
    with_cert: bool,
) -> std::sync::Arc<steadfast::transport::rustls::ClientConfig> {
    use steadfast::transport::rustls;
    use steadfast::transport::rustls::pki_types::pem::PemObject;
    use steadfast::transport::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let config = if with_cert {
        let chain = CertificateDer::pem_slice_iter(pki.client.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("client chain");
        let key = PrivateKeyDer::from_pem_slice(pki.client.key_pem.as_bytes()).expect("key");
        builder
            .with_client_auth_cert(chain, key)
            .expect("client certificate")
    } else {
        builder.with_no_client_auth()
    };
    std::sync::Arc::new(config)
}

/// Bring your own TLS config: a rustls `ClientConfig` given to the builder is used for
/// `mqtts://` as it is: its roots verify the broker and its client certificate passes the
/// broker's mutual-TLS check; the same config without the certificate is refused fatally
/// (one attempt, named), and one whose roots lack the CA is fatal as an unknown issuer.
#[test]
fn own_rustls_client_config_is_used() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tls_broker(&pki, &pki.server, true);
        let topic = uid("tls/own");
        let (client, events) = quick(ClientBuilder::from_url(&url(&broker)).unwrap())
            .tls_client_config(own_client_config(&pki, &pki.ca_pem, true))
            .build()
            .unwrap();
        let mut log = Log::new(events);
        log.connected().await;
        assert_eq!(
            client.subscribe(topic.as_str(), QoS::AtLeastOnce).await,
            Ok(QoS::AtLeastOnce)
        );
        client
            .send(Message::new(topic.as_str(), "own config").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(log.message(&topic).await, b"own config");
        client.disconnect().await.unwrap();

        // Without the client certificate: the broker refuses, and that is fatal at once.
        let b = ClientBuilder::from_url(&url(&broker))
            .unwrap()
            .tls(TlsOptions::new().client_config(own_client_config(&pki, &pki.ca_pem, false)));
        let message = fatal_tls_message(b, &broker).await;
        assert!(message.contains("client certificate"), "{message}");

        // Roots without our CA: an unknown issuer, fatal.
        let other = tls_broker(&pki, &pki.unknown_ca, false);
        let b = ClientBuilder::from_url(&url(&other))
            .unwrap()
            .tls_client_config(own_client_config(&pki, &pki.ca_pem, false));
        let message = fatal_tls_message(b, &other).await;
        assert!(message.contains("unknown issuer"), "{message}");
    });
}

/// The file options cannot be mixed with a config of one's own: `build` says so, typed.
#[test]
fn own_rustls_config_mixed_with_file_options_fails_at_build() {
    let pki = Pki::generate();
    for mixed in [
        TlsOptions::new().ca_file(&pki.ca),
        TlsOptions::new().client_cert_files(&pki.client.cert, &pki.client.key),
        TlsOptions::new().danger_accept_invalid_certs(true),
    ] {
        let Err(err) = ClientBuilder::from_url("mqtts://127.0.0.1:1")
            .unwrap()
            .tls(mixed.client_config(own_client_config(&pki, &pki.ca_pem, false)))
            .build()
        else {
            panic!("a mix of options fails the build")
        };
        assert!(
            matches!(&err, BuildError::Tls(e) if e.0.contains("cannot be combined")),
            "{err}"
        );
    }
}

/// Cuts the client's TCP connection (a reset at a fault proxy in front of the broker) and
/// waits until the client has reconnected by itself.
async fn cut_and_reconnect(proxy: &steadfast_chaos::Proxy, log: &mut Log) {
    assert_eq!(
        proxy.handle().reset(),
        1,
        "one connection through the proxy"
    );
    log.lifecycle("ConnectionLost", T, |e| {
        matches!(e, Lifecycle::ConnectionLost { .. })
    })
    .await;
    log.connected().await;
}

/// Reconnects resume the TLS session (Mosquitto's OpenSSL sends session tickets): the first
/// connect is a full handshake, each reconnect of the same client after its link was cut is a
/// resumed one, as rustls reports it (`HandshakeKind::Resumed`, counted by
/// `DefaultConnector::tls_handshakes`). With mutual TLS too (no verdict wait on a resumed
/// connect: the broker asks for no certificate), over TLS 1.3 and TLS 1.2, and a client built
/// with a clone of the connector resumes a session another client made once that client's
/// connection is closed. Messages still flow over the resumed connections.
#[test]
fn reconnects_resume_the_tls_session() {
    use steadfast::transport::{DefaultConnector, TlsHandshakes};
    run(Duration::from_secs(60), async {
        let pki = Pki::generate();
        let cases = [
            ("TLS 1.3", tls_broker(&pki, &pki.server, false), false),
            ("TLS 1.3, mutual", tls_broker(&pki, &pki.server, true), true),
            (
                "TLS 1.2",
                tls_broker_with(&pki, &pki.server, false, "tls_version tlsv1.2\n"),
                false,
            ),
        ];
        for (what, broker, mutual) in cases {
            let proxy =
                steadfast_chaos::Proxy::start("127.0.0.1:0".parse().unwrap(), broker.addr())
                    .await
                    .unwrap();
            let mut tls = TlsOptions::new().ca_file(&pki.ca);
            if mutual {
                tls = tls.client_cert_files(&pki.client.cert, &pki.client.key);
            }
            let connector = DefaultConnector::with_tls(tls).unwrap();
            let url = format!("mqtts://127.0.0.1:{}", proxy.local_addr().port());
            let topic = uid("tls/resume");
            let (client, events) = quick(ClientBuilder::from_url(&url).unwrap())
                .connector(connector.clone())
                .build()
                .unwrap();
            let mut log = Log::new(events);
            log.connected().await;
            assert_eq!(
                connector.tls_handshakes(),
                TlsHandshakes {
                    full: 1,
                    resumed: 0
                },
                "{what}: the first connect is a full handshake"
            );
            client
                .subscribe(topic.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();
            log.sync(&client, &topic).await;
            for n in 1..=2 {
                cut_and_reconnect(&proxy, &mut log).await;
                assert_eq!(
                    connector.tls_handshakes(),
                    TlsHandshakes {
                        full: 1,
                        resumed: n
                    },
                    "{what}: reconnect {n} resumed; broker log:\n{}",
                    broker.log()
                );
                log.sync(&client, &topic).await;
            }
            // Once this client's connection is closed, another client with a clone of the
            // connector uses the tickets that connection received.
            client.disconnect().await.unwrap();
            let (other, events) = quick(ClientBuilder::from_url(&url).unwrap())
                .connector(connector.clone())
                .build()
                .unwrap();
            let mut other_log = Log::new(events);
            other_log.connected().await;
            assert_eq!(
                connector.tls_handshakes(),
                TlsHandshakes {
                    full: 1,
                    resumed: 3
                },
                "{what}: a second client resumed"
            );
            other
                .subscribe(topic.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();
            other_log.sync(&other, &topic).await;
            other.disconnect().await.unwrap();
            eprintln!("{what}: {:?}", connector.tls_handshakes());
        }
    });
}
