//! Fault injection and broker test support for steadfast.
//!
//! - [`Proxy`]: a TCP proxy between an MQTT client and a broker whose faults
//!   (reset, blackhole, silent cut, refuse, delay, throttle, CONNECT rejection,
//!   injected DISCONNECT) are switched at run time through a [`ProxyHandle`].
//! - [`mosquitto`]: starts private Mosquitto brokers on free loopback ports.
//! - [`brokers`]: private NATS, RabbitMQ, rumqttd or other broker processes, the same way.
//! - [`fake`]: a scripted fake broker for what a real broker will not do.
//! - [`udp`]: a UDP relay for QUIC whose faults (loss, blackhole, delay and jitter, NAT
//!   rebinding) are switched at run time through a [`UdpProxyHandle`].
//! - `quic` (feature `quic`): a QUIC-to-TCP bridge, MQTT over QUIC in front of a TCP broker.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use steadfast_chaos::{mosquitto::Mosquitto, Proxy};
//!
//! let broker = Mosquitto::builder().start()?;
//! let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), broker.addr()).await?;
//! let faults = proxy.handle();
//! // ... connect a client to proxy.local_addr() ...
//! faults.blackhole(Some(Duration::from_secs(3)));
//! faults.reset();
//! faults.reject_next_connects(2, 0x87);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod brokers;
pub mod fake;
mod frame;
pub mod mosquitto;
mod proxy;
#[cfg(feature = "quic")]
pub mod quic;
pub mod raw;
pub mod udp;

pub use frame::{v5_to_v311_connack_code, MAX_REMAINING_LENGTH};
pub use proxy::{FaultRecord, Proxy, ProxyHandle, ProxyStats};
pub use udp::{UdpProxy, UdpProxyHandle, UdpStats};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago (picked by binding port
/// 0). Another process may take it before you bind it: callers that start a
/// server on it should retry with a new port if the bind fails.
///
/// # Panics
/// If no port of 127.0.0.1 can be bound at all (a broken test machine).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))) {
            if let Ok(addr) = l.local_addr() {
                return addr.port();
            }
        }
    }
    panic!("free_port: cannot bind any port on 127.0.0.1");
}
