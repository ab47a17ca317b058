//! The embedded broker of `steadfast demo`: rmqtt, started in-process on a free loopback port.
//!
//! rmqtt is a maintained MQTT 3.1.1 / 5.0 broker library for tokio (see docs/demo.md for the
//! choice). It logs through the `log` facade; the demo installs no logger, so it stays quiet.

use std::net::SocketAddr;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use tokio::task::JoinHandle;

/// The name and version shown in the demo's header and report.
pub const NAME: &str = "rmqtt 0.24 (embedded)";

/// A running embedded broker; dropping it stops accepting connections.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Binds 127.0.0.1 on a free port and starts serving MQTT 3.1.1 and 5.0 there.
    pub async fn start() -> Result<EmbeddedBroker, String> {
        Self::start_on(0).await
    }

    /// Binds 127.0.0.1:`port` (0: a free port) and starts serving MQTT 3.1.1 and 5.0 there.
    pub async fn start_on(port: u16) -> Result<EmbeddedBroker, String> {
        let scx = ServerContext::new().build().await;
        let listener = Builder::new()
            .name("demo/tcp")
            .laddr(SocketAddr::from(([127, 0, 0, 1], port)))
            .nodelay(true)
            // A restart on the same port (the interop tests) must not wait out TIME_WAIT.
            .reuseaddr(Some(true))
            .max_inflight(std::num::NonZeroU16::new(64).unwrap_or(std::num::NonZeroU16::MIN))
            // Queued QoS 1 messages for a subscriber that is away (client restart).
            .max_mqueue_len(100_000)
            // Sessions outlive a lost connection for what the client asks, at most an hour.
            .max_session_expiry_interval(Duration::from_secs(3600))
            .bind()
            .map_err(|e| format!("embedded broker: cannot bind 127.0.0.1:{port}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("embedded broker: no local address: {e}"))?;
        let listener = listener
            .tcp()
            .map_err(|e| format!("embedded broker: cannot start the TCP listener: {e}"))?;
        let server = MqttServer::new(scx)
            .listener_by_id(listener, addr.port())
            .build();
        let task = tokio::spawn(async move {
            // `run` only returns when every listener stopped; errors are logged by rmqtt.
            let _ = server.run().await;
        });
        Ok(EmbeddedBroker { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
