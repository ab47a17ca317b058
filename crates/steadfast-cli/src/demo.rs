//! `steadfast demo`: an embedded broker, the fault proxy in front of it, a QoS 1 publisher and
//! a subscriber through the proxy, five scripted faults, a live view and a final report.
//!
//! The faults, in order: a network drop (the proxy resets every connection), a half-open
//! link (the proxy goes silent for longer than the keep-alive), a broker-side close
//! (DISCONNECT 0x8B "server shutting down", injected by the proxy), a client restart (the
//! subscriber is stopped, and a new client with the same id resumes its session) and an
//! address change (a NAT rebinding: the proxy cuts the live connections silently). With
//! `--transport quic` the clients speak MQTT over QUIC to an embedded broker with a QUIC
//! listener, through the UDP fault proxy: the network drop is a short loss of every datagram
//! (UDP has no reset), the broker close a real broker restart, and the address change moves
//! every flow to a new port, which QUIC survives without a reconnect. The report says how
//! long each took to detect and to recover, which backoff delays were chosen, and whether any
//! message was lost. See docs/demo.md.

pub(crate) mod broker;
mod quic_broker;
mod track;
mod view;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};
use steadfast::store::MemoryStore;
use steadfast::{Client, ClientBuilder, ClientEvent, Events, Exponential, Jitter, Message, QoS};
use steadfast_chaos::udp::{Direction, UdpProxy};
use steadfast_chaos::Proxy;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use track::{FaultKind, FaultRun, Role, Shared};
use view::{LiveView, Report, Setup};

/// Arguments of `steadfast demo`.
#[derive(Args, Debug)]
#[command(after_help = "\
The faults, in order: a network drop (the proxy resets every connection), a half-open link
(the proxy forwards nothing for longer than the keep-alive), a broker-side close (DISCONNECT
0x8B, server shutting down), a client restart (the subscriber stops; a new client with the
same id resumes its session) and an address change (a NAT rebinding: the proxy cuts the live
TCP connections without a word). With --transport quic the clients speak MQTT over QUIC to
an embedded QUIC broker through the UDP fault proxy: the network drop is half a keep-alive of
lost datagrams, the broker close a real broker restart, and the address change moves every
flow to a new port, which QUIC survives without a reconnect. On a terminal a live view is
redrawn in place; otherwise one plain line per step is printed. The report ends the run.

Examples:
  steadfast demo                               # embedded broker, about 35 s
  steadfast demo --transport quic              # the same over QUIC, side by side with TCP
  steadfast demo --json | tail -n 1            # the report as one JSON object
  steadfast demo -L mqtt://user:pw@broker:1883 # a real broker, the proxy in front of it
  steadfast demo --fast                        # a shorter run (about 15 s)

Exit status: 0 when no message was lost, 1 otherwise or on an error, 2 for a usage error,
3 when the broker refuses the clients (bad credentials, not authorized).")]
pub struct DemoArgs {
    /// Run against this broker instead of the embedded one: mqtt://[user[:pass]@]host[:port].
    /// The fault proxy sits in front of its host and port.
    #[arg(short = 'L', long, value_name = "URL")]
    pub url: Option<String>,
    /// Also print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// A shorter run (1 s keep-alive, shorter pauses between the faults).
    #[arg(long)]
    pub fast: bool,
    /// Messages published per second.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rate: u32,
    /// tcp: the embedded rmqtt broker behind the TCP fault proxy; quic: MQTT over QUIC to an
    /// embedded broker with a QUIC listener, behind the UDP fault proxy.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
}

/// The clients' transport in the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over QUIC.
    Quic,
}

/// The faults' machinery: the TCP proxy, or the UDP proxy and the embedded QUIC broker (whose
/// restart is the broker-side close).
enum Net {
    Tcp(Proxy),
    Quic {
        proxy: UdpProxy,
        broker: quic_broker::QuicBroker,
    },
}

/// The demo's pacing.
#[derive(Debug, Clone, Copy)]
struct Timing {
    keep_alive: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    connect_timeout: Duration,
    /// Before the first fault.
    warmup: Duration,
    /// After each recovery, before the next fault.
    gap: Duration,
    /// How long the half-open link stays silent.
    blackhole: Duration,
    /// How long the QUIC network drop loses every datagram.
    outage: Duration,
    /// How long the restarted subscriber stays away.
    away: Duration,
    /// Most a fault may take to recover before the demo moves on.
    recover_limit: Duration,
    /// Most the final drain (every message acknowledged and received) may take.
    drain_limit: Duration,
}

impl Timing {
    fn new(fast: bool) -> Timing {
        if fast {
            Timing {
                keep_alive: Duration::from_secs(1),
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(2),
                warmup: Duration::from_secs(1),
                gap: Duration::from_millis(1500),
                blackhole: Duration::from_millis(2500),
                outage: Duration::from_millis(500),
                away: Duration::from_secs(1),
                recover_limit: Duration::from_secs(15),
                drain_limit: Duration::from_secs(10),
            }
        } else {
            Timing {
                keep_alive: Duration::from_secs(2),
                backoff_min: Duration::from_millis(200),
                backoff_max: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(3),
                warmup: Duration::from_secs(3),
                gap: Duration::from_secs(5),
                blackhole: Duration::from_secs(4),
                outage: Duration::from_secs(1),
                away: Duration::from_secs(2),
                recover_limit: Duration::from_secs(20),
                drain_limit: Duration::from_secs(10),
            }
        }
    }
}

/// Runs `steadfast demo`.
pub fn run(args: DemoArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("steadfast demo: cannot start the runtime: {e}");
            return ExitCode::from(crate::exit::RUNTIME);
        }
    };
    let json = args.json;
    let result = rt.block_on(demo(args));
    // The broker's and the clients' tasks end with the runtime.
    rt.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(report) => {
            print!("{}", report.text());
            if json {
                println!("{}", report.json());
            }
            if report.passed() {
                ExitCode::from(crate::exit::OK)
            } else {
                ExitCode::from(crate::exit::RUNTIME)
            }
        }
        Err(DemoError::Usage(e)) => {
            eprintln!("steadfast demo: {e}");
            ExitCode::from(crate::exit::USAGE)
        }
        Err(DemoError::Runtime(e)) => {
            eprintln!("steadfast demo: {e}");
            ExitCode::from(crate::exit::RUNTIME)
        }
        Err(DemoError::Refused(e)) => {
            eprintln!("steadfast demo: {e}");
            ExitCode::from(crate::exit::REFUSED)
        }
    }
}

#[derive(Debug)]
enum DemoError {
    Usage(String),
    Runtime(String),
    /// A fatal refusal by the broker (bad credentials, not authorized, ...).
    Refused(String),
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(s: &SharedRef) -> MutexGuard<'_, Shared> {
    // A panicking task cannot leave the counters in a state worth refusing to read.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// `host:port` of an `mqtt://` URL, resolved.
/// Also returns the builder (for the URL's credentials) and the URL without credentials.
async fn upstream_of(url: &str) -> Result<(SocketAddr, ClientBuilder, String), DemoError> {
    let builder = ClientBuilder::from_url(url).map_err(|e| DemoError::Usage(e.to_string()))?;
    let server = builder
        .config()
        .servers
        .first()
        .cloned()
        .ok_or_else(|| DemoError::Usage(format!("--url {url:?}: no server")))?;
    if server.scheme() != steadfast::proto::server::Scheme::Mqtt {
        return Err(DemoError::Usage(format!(
            "--url {server}: the demo's fault proxy speaks plain TCP; use an mqtt:// URL"
        )));
    }
    let (host, port) = (server.host(), server.port());
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| DemoError::Runtime(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| DemoError::Runtime(format!("cannot resolve {host}")))?;
    Ok((addr, builder, server.to_string()))
}

/// A short random id for client ids and the topic, so runs never share a session.
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() & 0xffff_ffff)
}

struct Demo {
    shared: SharedRef,
    setup: Setup,
    timing: Timing,
    /// The URL's builder (credentials), or a fresh one.
    base: ClientBuilder,
    server: String,
    /// The CA the QUIC clients trust (the embedded QUIC broker's).
    ca_pem: Option<String>,
    id: String,
    tty: bool,
}

impl Demo {
    fn builder(&self, role: Role) -> ClientBuilder {
        let t = &self.timing;
        let mut b = ClientBuilder::new().server(self.server.clone());
        if let Some(ca) = &self.ca_pem {
            b = b.ca_pem(ca.as_bytes().to_vec());
        }
        let c = self.base.config();
        if let Some(user) = &c.username {
            let pass = c.password.as_ref().map(|p| p.to_vec()).unwrap_or_default();
            b = b.credentials(user.as_str(), pass);
        }
        b.client_id(format!("steadfast-demo-{}-{}", role.name(), self.id))
            .keep_alive(t.keep_alive)
            .connect_timeout(t.connect_timeout)
            .backoff(Exponential::new(t.backoff_min, t.backoff_max).jitter(Jitter::Decorrelated))
            // Each fault starts the backoff over, so every recovery shows the policy from its start.
            .stable_after(Duration::from_secs(1))
            // The broker keeps both sessions for a minute: in-flight and queued QoS 1 messages
            // survive every fault.
            .session_expiry(Duration::from_secs(60))
    }

    /// Prints a plain progress line (only when the live view is off).
    fn say(&self, text: &str) {
        if !self.tty {
            view::plain(&lock(&self.shared), text);
        }
    }

    fn phase(&self, text: impl Into<String>) {
        lock(&self.shared).phase = text.into();
    }
}

/// Reads a client's events into the shared state until the client ends.
fn consume(mut events: Events, role: Role, shared: SharedRef) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                ClientEvent::Lifecycle { at, event } => lock(&shared).lifecycle(role, at, &event),
                ClientEvent::Message(m) => {
                    let seq = std::str::from_utf8(m.payload())
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok());
                    lock(&shared).message(seq);
                }
                _ => {}
            }
        }
    })
}

/// Publishes 1, 2, 3, ... at `rate` per second until `stop`; counts acceptances and PUBACKs.
fn publisher(
    client: Client,
    topic: String,
    rate: u32,
    shared: SharedRef,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            seq += 1;
            let message = Message::new(topic.as_str(), seq.to_string()).qos(QoS::AtLeastOnce);
            // Accepted = in the client's session (queued while offline); the PUBACK comes later.
            match client.publish_accepted(message).await {
                Ok(pending) => {
                    {
                        let mut s = lock(&shared);
                        s.sent = seq;
                        s.sent_at.push(SystemTime::now());
                    }
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let ok = pending.await.is_ok();
                        let mut s = lock(&shared);
                        if ok {
                            s.acked += 1;
                            s.publisher.flow.push(SystemTime::now());
                        } else {
                            s.publish_errors += 1;
                        }
                    });
                }
                Err(_) => {
                    // Not accepted: the number is not used, so it is not counted as sent.
                    seq -= 1;
                    lock(&shared).publish_errors += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Waits until `pred` holds on the shared state, polling; false on timeout.
async fn wait_for(shared: &SharedRef, limit: Duration, pred: impl Fn(&Shared) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if pred(&lock(shared)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn demo(args: DemoArgs) -> Result<Report, DemoError> {
    let timing = Timing::new(args.fast);
    let tty = std::io::stdout().is_terminal();
    let id = run_id();

    // 1. The broker: embedded, or the one named by --url; 2. the fault proxy in front of it.
    let proxy_err =
        |e: std::io::Error| DemoError::Runtime(format!("cannot start the fault proxy: {e}"));
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (mut net, embedded, upstream, base, broker_name, server, ca_pem) = match args.transport {
        Transport::Quic => {
            if args.url.is_some() {
                return Err(DemoError::Usage(
                    "--transport quic plays against its embedded QUIC broker; --url is for \
                     TCP brokers (mqtt://)"
                        .into(),
                ));
            }
            let broker = quic_broker::QuicBroker::start()
                .await
                .map_err(DemoError::Runtime)?;
            let upstream = broker.addr();
            let proxy = UdpProxy::start(any, upstream).await.map_err(proxy_err)?;
            let server = format!("quic://127.0.0.1:{}", proxy.local_addr().port());
            let ca = broker.ca_pem().to_string();
            (
                Net::Quic { proxy, broker },
                None,
                upstream,
                ClientBuilder::new(),
                quic_broker::NAME.to_string(),
                server,
                Some(ca),
            )
        }
        Transport::Tcp => {
            let (embedded, upstream, base, name) = match &args.url {
                None => {
                    let b = broker::EmbeddedBroker::start()
                        .await
                        .map_err(DemoError::Runtime)?;
                    let addr = b.addr();
                    (
                        Some(b),
                        addr,
                        ClientBuilder::new(),
                        broker::NAME.to_string(),
                    )
                }
                Some(url) => {
                    let (addr, builder, server) = upstream_of(url).await?;
                    (None, addr, builder, format!("external broker {server}"))
                }
            };
            let proxy = Proxy::start(any, upstream).await.map_err(proxy_err)?;
            let server = format!("mqtt://{}", proxy.local_addr());
            (
                Net::Tcp(proxy),
                embedded,
                upstream,
                base,
                name,
                server,
                None,
            )
        }
    };
    let proxy_addr = match &net {
        Net::Tcp(p) => p.local_addr(),
        Net::Quic { proxy, .. } => proxy.local_addr(),
    };
    let setup = Setup {
        broker: broker_name,
        broker_addr: upstream.to_string(),
        proxy_addr: proxy_addr.to_string(),
        transport: match args.transport {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        },
        topic: format!("steadfast/demo/{id}"),
        rate: args.rate,
        keep_alive: timing.keep_alive,
        backoff: (timing.backoff_min, timing.backoff_max),
    };
    let shared: SharedRef = Arc::new(Mutex::new(Shared::new()));
    let demo = Demo {
        shared: shared.clone(),
        setup: setup.clone(),
        timing,
        base,
        server,
        ca_pem,
        id,
        tty,
    };

    if !tty {
        let proxy = if args.transport == Transport::Quic {
            "UDP fault proxy"
        } else {
            "fault proxy"
        };
        demo.say(&format!(
            "steadfast demo: {} at {}, {proxy} at {}",
            setup.broker, setup.broker_addr, setup.proxy_addr
        ));
    }

    // The live view (a terminal only).
    let (view_stop, mut view_stop_rx) = watch::channel(false);
    let view_task = tty.then(|| {
        let shared = shared.clone();
        let setup = setup.clone();
        tokio::spawn(async move {
            let mut live = LiveView::default();
            loop {
                live.draw(&setup, &lock(&shared));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = view_stop_rx.changed() => break,
                }
            }
            live.draw(&setup, &lock(&shared));
            println!();
        })
    });

    let result = script(&demo, &mut net, args.rate).await;

    let _ = view_stop.send(true);
    if let Some(t) = view_task {
        let _ = t.await;
    }
    match net {
        Net::Tcp(proxy) => proxy.shutdown().await,
        Net::Quic { proxy, broker } => {
            drop(proxy);
            drop(broker);
        }
    }
    drop(embedded);
    result?;
    let report = Report::new(setup, &lock(&shared));
    Ok(report)
}

/// How a fault is played over each transport: its short detail and its explanation.
fn describe_fault(kind: FaultKind, quic: bool, t: &Timing) -> (String, String) {
    let silent = track::fmt_dur(t.blackhole);
    match (kind, quic) {
        (FaultKind::NetworkDrop, false) => (
            "proxy reset".into(),
            "the proxy resets every connection (TCP RST)".into(),
        ),
        (FaultKind::NetworkDrop, true) => (
            format!("lost {}", track::fmt_dur(t.outage)),
            format!(
                "the link loses every datagram for {} (UDP has no reset to send)",
                track::fmt_dur(t.outage)
            ),
        ),
        (FaultKind::HalfOpen, _) => (
            format!("silent {silent}"),
            format!(
                "the proxy forwards nothing for {silent}, closing nothing (keep-alive {})",
                track::fmt_dur(t.keep_alive)
            ),
        ),
        (FaultKind::BrokerClose, false) => (
            "DISCONNECT 0x8B".into(),
            "the proxy sends DISCONNECT 0x8B (server shutting down) and closes".into(),
        ),
        (FaultKind::BrokerClose, true) => (
            "broker restart".into(),
            "the broker shuts down (DISCONNECT 0x8B, server shutting down) and starts again".into(),
        ),
        (FaultKind::ClientRestart, _) => (
            format!("away {}", track::fmt_dur(t.away)),
            format!(
                "the subscriber stops; a new client with the same id and session starts {} later",
                track::fmt_dur(t.away)
            ),
        ),
        (FaultKind::AddressChange, false) => (
            "proxy cut".into(),
            "a NAT rebinding: the live TCP connections go dead without a word".into(),
        ),
        (FaultKind::AddressChange, true) => (
            "NAT rebind".into(),
            "a NAT rebinding: the broker sees both clients come from new ports".into(),
        ),
    }
}

/// Connects the clients, plays the five faults, drains, and stops the clients.
async fn script(demo: &Demo, net: &mut Net, rate: u32) -> Result<(), DemoError> {
    let shared = &demo.shared;
    let t = demo.timing;
    let topic = demo.setup.topic.clone();

    // 3. The subscriber (its session kept in a store that outlives the client, for the
    //    restart), then the publisher.
    demo.phase("connecting");
    let store = MemoryStore::new();
    let (sub, sub_events) = demo
        .builder(Role::Subscriber)
        .store(store.clone())
        .build()
        .map_err(|e| DemoError::Usage(e.to_string()))?;
    let mut sub_task = consume(sub_events, Role::Subscriber, shared.clone());
    let (publ, pub_events) = demo
        .builder(Role::Publisher)
        .build()
        .map_err(|e| DemoError::Usage(e.to_string()))?;
    let pub_task = consume(pub_events, Role::Publisher, shared.clone());
    let connected = wait_for(shared, Duration::from_secs(10), |s| {
        (s.publisher.connects > 0 && s.subscriber.connects > 0)
            || s.publisher.fatal.is_some()
            || s.subscriber.fatal.is_some()
    })
    .await;
    let refused = {
        let s = lock(shared);
        s.publisher
            .fatal
            .clone()
            .or_else(|| s.subscriber.fatal.clone())
    };
    if let Some(why) = refused {
        return Err(DemoError::Refused(format!(
            "the broker at {} refused the connection: {why}",
            demo.setup.broker_addr
        )));
    }
    if !connected {
        let s = lock(shared);
        let why = [&s.subscriber, &s.publisher]
            .iter()
            .find_map(|t| t.fatal.clone().or_else(|| t.last_failure.clone()))
            .unwrap_or_else(|| "no answer".into());
        return Err(DemoError::Runtime(format!(
            "could not connect to the broker at {} through the proxy within 10 s: {why}",
            demo.setup.broker_addr
        )));
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        sub.subscribe(topic.clone(), QoS::AtLeastOnce),
    )
    .await
    .map_err(|_| DemoError::Runtime("the broker did not answer SUBSCRIBE within 10 s".into()))?
    .map_err(|e| DemoError::Runtime(format!("subscribe failed: {e}")))?;
    demo.say(&format!(
        "publisher and subscriber connected through the proxy; publishing {rate} QoS 1 messages/s on {topic}"
    ));

    let (stop_pub, stop_rx) = watch::channel(false);
    let pub_loop = publisher(publ.clone(), topic.clone(), rate, shared.clone(), stop_rx);
    demo.phase("publishing");
    tokio::time::sleep(t.warmup).await;

    // 4. The faults.
    let mut sub = Some(sub);
    for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(t.gap).await;
        }
        let quic = matches!(net, Net::Quic { .. });
        let (detail, explain) = describe_fault(kind, quic, &t);
        let n = FaultKind::ALL.len();
        demo.phase(format!("fault {}/{n}: {}", i + 1, kind.title()));
        demo.say(&format!("fault {}/{n}, {}: {explain}", i + 1, kind.title()));
        let injected = SystemTime::now();
        lock(shared).faults.push(FaultRun {
            kind,
            detail,
            injected,
            outcomes: Vec::new(),
            settled: false,
            published_while_away: None,
            restarted: None,
            // Over QUIC the short loss and the NAT rebinding may be ridden through.
            ride_from: match (kind, quic) {
                (FaultKind::NetworkDrop, true) => Some(injected + t.outage),
                (FaultKind::AddressChange, true) => Some(injected),
                _ => None,
            },
            reconnects: 0,
            connections_lost: 0,
        });
        let ride_from = lock(shared).faults.last().and_then(|f| f.ride_from);
        match (kind, &mut *net) {
            (FaultKind::NetworkDrop, Net::Tcp(p)) => {
                p.handle().reset();
            }
            (FaultKind::NetworkDrop, Net::Quic { proxy, .. }) => {
                proxy.handle().blackhole(Direction::Both, Some(t.outage));
            }
            (FaultKind::HalfOpen, Net::Tcp(p)) => p.handle().blackhole(Some(t.blackhole)),
            (FaultKind::HalfOpen, Net::Quic { proxy, .. }) => {
                proxy.handle().blackhole(Direction::Both, Some(t.blackhole));
            }
            (FaultKind::BrokerClose, Net::Tcp(p)) => {
                p.handle().send_disconnect(0x8B);
            }
            (FaultKind::BrokerClose, Net::Quic { broker, .. }) => {
                broker.restart().await.map_err(DemoError::Runtime)?;
            }
            (FaultKind::AddressChange, Net::Tcp(p)) => {
                p.handle().cut();
            }
            (FaultKind::AddressChange, Net::Quic { proxy, .. }) => {
                proxy
                    .handle()
                    .rebind()
                    .map_err(|e| DemoError::Runtime(format!("the UDP proxy cannot rebind: {e}")))?;
            }
            (FaultKind::ClientRestart, _) => {
                if let Some(old) = sub.take() {
                    let _ = old.disconnect().await;
                    drop(old);
                }
                // The old client's events end once its driver is gone.
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut sub_task).await;
                tokio::time::sleep(t.away).await;
                if let Some(f) = lock(shared).faults.last_mut() {
                    f.restarted = Some(SystemTime::now());
                }
                let (new_sub, events) = demo
                    .builder(Role::Subscriber)
                    .store(store.clone())
                    .build()
                    .map_err(|e| DemoError::Runtime(format!("restarting the subscriber: {e}")))?;
                sub_task = consume(events, Role::Subscriber, shared.clone());
                sub = Some(new_sub);
            }
        }

        // Wait until every affected client is connected again and traffic flows.
        let restart = kind == FaultKind::ClientRestart;
        let update = |s: &mut Shared| -> bool {
            let outcomes: Vec<_> = kind
                .affects()
                .iter()
                .map(|&r| (r, s.track_ref(r).outcome(injected, restart, ride_from)))
                .collect();
            let done = outcomes.iter().all(|(_, o)| o.flowing.is_some());
            if let Some(f) = s.faults.last_mut() {
                f.outcomes = outcomes;
            }
            done
        };
        let deadline = tokio::time::Instant::now() + t.recover_limit;
        loop {
            let done = update(&mut lock(shared));
            if done || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        {
            let mut s = lock(shared);
            update(&mut s);
            if restart {
                let o = s
                    .faults
                    .last()
                    .and_then(|f| f.outcomes.first())
                    .map(|(_, o)| o.clone());
                if let (Some(stop), Some(back)) = (
                    o.as_ref().and_then(|o| o.detected),
                    o.as_ref().and_then(|o| o.connected),
                ) {
                    let away = s.sent_between(stop, back);
                    if let Some(f) = s.faults.last_mut() {
                        f.published_while_away = Some(away);
                    }
                }
            }
            let (reconnects, lost) = s.churn_since(kind.affects(), injected);
            if let Some(f) = s.faults.last_mut() {
                f.reconnects = reconnects;
                f.connections_lost = lost;
                f.settled = true;
            }
        }
        if !demo.tty {
            let s = lock(shared);
            if let Some(f) = s.faults.last() {
                view::plain_fault(&s, f);
            }
        }
    }

    // Settle, stop publishing, and wait until everything sent was acknowledged and received.
    tokio::time::sleep(t.gap.min(Duration::from_secs(2))).await;
    demo.phase("draining");
    let _ = stop_pub.send(true);
    let _ = pub_loop.await;
    let drained = wait_for(shared, t.drain_limit, |s| {
        s.acked + s.publish_errors >= s.sent && s.lost() == 0
    })
    .await;
    if !drained {
        demo.say("drain timed out: some messages were not acknowledged or not received");
    }
    // The restart fault's delivery count, now that everything arrived.
    {
        let mut s = lock(shared);
        let span = s
            .faults
            .iter()
            .find(|f| f.kind == FaultKind::ClientRestart)
            .and_then(|f| f.outcomes.first())
            .and_then(|(_, o)| Some((o.detected?, o.connected?)));
        if let Some((stop, back)) = span {
            let away = s.sent_between(stop, back);
            if let Some(f) = s
                .faults
                .iter_mut()
                .find(|f| f.kind == FaultKind::ClientRestart)
            {
                f.published_while_away = Some(away);
            }
        }
    }
    demo.phase("done");

    // Stop both clients cleanly.
    if let Some(sub) = sub.take() {
        let _ = tokio::time::timeout(Duration::from_secs(3), sub.disconnect()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), publ.disconnect()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sub_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), pub_task).await;
    Ok(())
}
