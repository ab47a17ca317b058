//! Private instances of other brokers for interoperability tests: NATS (its MQTT mode),
//! RabbitMQ (its MQTT plugin), rumqttd, or any broker binary that takes its port on the
//! command line.
//!
//! Each [`BrokerProcess`] runs as a child process (in its own process group, so a broker that
//! forks, like RabbitMQ's Erlang VM, is stopped as a whole) with its config and data in its own
//! temporary directory, listening on free 127.0.0.1 ports only. It never touches the system
//! brokers on 1883, 4222 or 5672. [`BrokerProcess::restart`] starts it again on the same port
//! with the same data directory, so a broker that keeps sessions on disk (NATS's JetStream
//! store, RabbitMQ's Mnesia) still has them.
//!
//! ```no_run
//! use steadfast_chaos::brokers::BrokerProcess;
//! let mut nats = BrokerProcess::nats()?;
//! println!("{}", nats.url()); // mqtt://127.0.0.1:PORT
//! nats.restart()?;           // SIGTERM, then the same port again
//! # std::io::Result::Ok(())
//! ```
//!
//! A missing binary is an error that names what was looked for and how to install it. These
//! calls block (RabbitMQ needs 5 to 15 s to listen); from async code wrap them in
//! `block_in_place` or `spawn_blocking`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PORT_ATTEMPTS: usize = 5;

/// Finds a broker binary: the environment variable `env_var` if set (a path), else `name` in
/// one of `dirs` (in order), else `name` on `PATH`. The error says where it looked and what
/// installs it. `dirs` come first because a wrapper on `PATH` may be the wrong program: Debian's
/// `/usr/sbin/rabbitmq-server` switches to the `rabbitmq` user, which cannot use a test's
/// files.
pub fn find_binary(name: &str, env_var: &str, dirs: &[&str], install: &str) -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{env_var}={} is not a file", p.display()),
        ));
    }
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for dir in dirs.iter().map(PathBuf::from).chain(path_dirs) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "broker binary `{name}` not found (looked in ${env_var}, {dirs:?} and PATH); {install} \
             (./scripts/test installs it)"
        ),
    ))
}

/// What a broker needs for one run, computed from its ports.
struct Layout {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Config files to (re)write into the temp dir: (file name, contents).
    files: Vec<(String, String)>,
}

type Plan = Box<dyn Fn(&Path, &[u16]) -> Layout + Send>;

/// A private broker process. Dropping it kills the broker's process group and removes its
/// temp dir.
pub struct BrokerProcess {
    name: &'static str,
    /// `ports[0]` is the MQTT port; the others are what the broker needs besides (NATS's client
    /// port, RabbitMQ's AMQP and distribution ports).
    ports: Vec<u16>,
    plan: Plan,
    ready_timeout: Duration,
    log: PathBuf,
    child: Option<Child>,
    // Last, so the child is killed (Drop) before the dir goes.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for BrokerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerProcess")
            .field("name", &self.name)
            .field("ports", &self.ports)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl BrokerProcess {
    /// NATS (`nats-server`, MQTT 3.1.1 only) with JetStream in the temp dir, its MQTT listener
    /// and its client port on free loopback ports.
    pub fn nats() -> io::Result<BrokerProcess> {
        let bin = find_binary(
            "nats-server",
            "STEADFAST_NATS_SERVER",
            &["/usr/sbin", "/usr/bin"],
            "install Debian's nats-server package",
        )?;
        Self::start_with(
            "nats-server",
            2,
            Duration::from_secs(15),
            Box::new(move |dir, ports| Layout {
                program: bin.clone(),
                args: vec!["-c".into(), dir.join("nats.conf").into()],
                env: Vec::new(),
                files: vec![(
                    "nats.conf".into(),
                    format!(
                        "server_name: steadfast_test_{mqtt}\n\
                         listen: 127.0.0.1:{client}\n\
                         jetstream {{ store_dir: \"{store}\" }}\n\
                         mqtt {{ listen: 127.0.0.1:{mqtt} }}\n",
                        mqtt = ports[0],
                        client = ports[1],
                        store = dir.join("jetstream").display()
                    ),
                )],
            }),
        )
    }

    /// RabbitMQ (`rabbitmq-server` with the `rabbitmq_mqtt` plugin, MQTT 3.1.1 only) as a
    /// private node: its own node name, AMQP, distribution and MQTT ports, Mnesia directory
    /// and `HOME` (for the Erlang cookie). Anonymous MQTT clients log in as `guest`.
    pub fn rabbitmq() -> io::Result<BrokerProcess> {
        let bin = find_binary(
            "rabbitmq-server",
            "STEADFAST_RABBITMQ_SERVER",
            &["/usr/lib/rabbitmq/bin", "/usr/sbin", "/usr/bin"],
            "install Debian's rabbitmq-server package",
        )?;
        Self::start_with(
            "rabbitmq-server",
            3,
            Duration::from_secs(60),
            Box::new(move |dir, ports| {
                let d = |s: &str| OsString::from(dir.join(s));
                Layout {
                    program: bin.clone(),
                    args: Vec::new(),
                    env: vec![
                        ("HOME".into(), dir.into()),
                        (
                            "RABBITMQ_NODENAME".into(),
                            format!("steadfast-test-{}@localhost", ports[0]).into(),
                        ),
                        ("RABBITMQ_NODE_IP_ADDRESS".into(), "127.0.0.1".into()),
                        ("RABBITMQ_NODE_PORT".into(), ports[1].to_string().into()),
                        ("RABBITMQ_DIST_PORT".into(), ports[2].to_string().into()),
                        ("RABBITMQ_CONFIG_FILE".into(), d("rabbitmq.conf")),
                        ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), d("enabled_plugins")),
                        ("RABBITMQ_MNESIA_BASE".into(), d("mnesia")),
                        ("RABBITMQ_LOG_BASE".into(), d("log")),
                        // Its log goes to stdout, into broker.log with the rest.
                        ("RABBITMQ_LOGS".into(), "-".into()),
                        ("RABBITMQ_PLUGINS_EXPAND_DIR".into(), d("plugins-expand")),
                        ("RABBITMQ_PID_FILE".into(), d("rabbitmq.pid")),
                    ],
                    files: vec![
                        ("enabled_plugins".into(), "[rabbitmq_mqtt].\n".into()),
                        (
                            "rabbitmq.conf".into(),
                            format!(
                                "listeners.tcp.default = 127.0.0.1:{amqp}\n\
                                 mqtt.listeners.tcp.default = 127.0.0.1:{mqtt}\n\
                                 mqtt.allow_anonymous = true\n",
                                amqp = ports[1],
                                mqtt = ports[0]
                            ),
                        ),
                    ],
                }
            }),
        )
    }

    /// rumqttd (crates.io; `cargo install rumqttd`) with one listener: MQTT 5 if `v5`, else
    /// MQTT 3.1.1 (rumqttd serves each version on its own port).
    pub fn rumqttd(v5: bool) -> io::Result<BrokerProcess> {
        let bin = find_binary(
            "rumqttd",
            "STEADFAST_RUMQTTD",
            &[concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/tools/bin"
            )],
            "run `cargo install rumqttd --root target/tools`",
        )?;
        Self::start_with(
            "rumqttd",
            1,
            Duration::from_secs(15),
            Box::new(move |dir, ports| {
                let section = if v5 { "v5" } else { "v4" };
                Layout {
                    program: bin.clone(),
                    args: vec!["-c".into(), dir.join("rumqttd.toml").into()],
                    env: Vec::new(),
                    files: vec![(
                        "rumqttd.toml".into(),
                        format!(
                            "id = 0\n\
                             [router]\n\
                             id = 0\n\
                             max_connections = 1000\n\
                             max_outgoing_packet_count = 200\n\
                             max_segment_size = 104857600\n\
                             max_segment_count = 10\n\
                             [{section}.1]\n\
                             name = \"{section}-1\"\n\
                             listen = \"127.0.0.1:{port}\"\n\
                             next_connection_delay_ms = 1\n\
                             [{section}.1.connections]\n\
                             connection_timeout_ms = 60000\n\
                             max_payload_size = 1048576\n\
                             max_inflight_count = 100\n\
                             dynamic_filters = true\n",
                            port = ports[0]
                        ),
                    )],
                }
            }),
        )
    }

    /// Any broker binary that takes its MQTT port on the command line: `args(port)` builds the
    /// arguments (for example `steadfast broker --port PORT`).
    pub fn command(
        name: &'static str,
        program: impl Into<PathBuf>,
        args: impl Fn(u16) -> Vec<String> + Send + 'static,
    ) -> io::Result<BrokerProcess> {
        let program = program.into();
        Self::start_with(
            name,
            1,
            Duration::from_secs(15),
            Box::new(move |_dir, ports| Layout {
                program: program.clone(),
                args: args(ports[0]).into_iter().map(OsString::from).collect(),
                env: Vec::new(),
                files: Vec::new(),
            }),
        )
    }

    fn start_with(
        name: &'static str,
        nports: usize,
        ready_timeout: Duration,
        plan: Plan,
    ) -> io::Result<BrokerProcess> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("steadfast-{name}-"))
            .tempdir()?;
        // RabbitMQ (Erlang) refuses to log into a 0700 directory even as its owner.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let log = dir.path().join("broker.log");
        let mut broker = BrokerProcess {
            name,
            ports: Vec::new(),
            plan,
            ready_timeout,
            log,
            child: None,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            broker.ports = (0..nports).map(|_| crate::free_port()).collect();
            match broker.spawn_and_wait() {
                Ok(child) => {
                    broker.child = Some(child);
                    return Ok(broker);
                }
                // Another process took a port between free_port and the broker's bind.
                Err(e) if e.port_in_use && attempt < PORT_ATTEMPTS => {}
                Err(e) => return Err(e.error),
            }
        }
    }

    /// The broker's short name (`nats-server`, `rabbitmq-server`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `127.0.0.1:port` of the MQTT listener.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports[0]))
    }

    /// The MQTT port.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// `mqtt://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.ports[0])
    }

    /// The broker's temp dir (config, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the broker wrote to stdout and stderr so far (all its runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the broker process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the broker's process group with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal_group(&c, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Stops the broker with SIGTERM to its process group (it closes its clients and keeps
    /// its data), waits up to 15 s, then SIGKILLs.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        signal_group(&c, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                // The leader is gone; make sure nothing of the group lingers on the ports.
                signal_group(&c, libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(&c, libc::SIGKILL);
        let _ = c.wait();
    }

    /// Starts the broker again on the same ports with the same data (stops it first if it
    /// runs) and waits until its MQTT port accepts connections.
    pub fn restart(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            self.stop();
        }
        let mut tries = 0;
        loop {
            tries += 1;
            match self.spawn_and_wait() {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                // A port still held by the old run for a moment.
                Err(e) if e.port_in_use && tries < 20 => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.error),
            }
        }
    }

    fn spawn_and_wait(&self) -> Result<Child, SpawnError> {
        let plain = |error: io::Error| SpawnError {
            error,
            port_in_use: false,
        };
        let layout = (self.plan)(self.dir.path(), &self.ports);
        for sub in ["mnesia", "log", "plugins-expand"] {
            if layout
                .env
                .iter()
                .any(|(_, v)| *v == self.dir.path().join(sub))
            {
                fs::create_dir_all(self.dir.path().join(sub)).map_err(plain)?;
            }
        }
        for (file, contents) in &layout.files {
            write_file(&self.dir.path().join(file), contents).map_err(plain)?;
        }
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(plain)?;
        let log_start = log_file.metadata().map(|m| m.len()).unwrap_or(0);
        // This run's part of the log, its last 4 KiB (RabbitMQ's crash reports are long).
        let run_log = || {
            let all = fs::read(&self.log).unwrap_or_default();
            let from = usize::try_from(log_start).unwrap_or(0).min(all.len());
            let from = from.max(all.len().saturating_sub(4096));
            String::from_utf8_lossy(&all[from..]).into_owned()
        };
        let stdout = log_file.try_clone().map_err(plain)?;
        let mut child = Command::new(&layout.program)
            .args(&layout.args)
            .envs(layout.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                plain(io::Error::new(
                    e.kind(),
                    format!("cannot run {}: {e}", layout.program.display()),
                ))
            })?;
        let deadline = Instant::now() + self.ready_timeout;
        let addr = self.addr();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                signal_group(&child, libc::SIGKILL);
                let text = run_log().to_lowercase();
                return Err(SpawnError {
                    port_in_use: text.contains("in use") || text.contains("eaddrinuse"),
                    error: io::Error::other(format!(
                        "{} on port {} exited ({status}) before it was ready; its log:\n{}",
                        self.name,
                        self.ports[0],
                        run_log()
                    )),
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && matches!(child.try_wait(), Ok(None))
            {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                signal_group(&child, libc::SIGKILL);
                let _ = child.wait();
                return Err(plain(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} on port {} not accepting connections after {:?}; its log:\n{}",
                        self.name,
                        self.ports[0],
                        self.ready_timeout,
                        run_log()
                    ),
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct SpawnError {
    error: io::Error,
    /// The process exited before its port answered, saying that an address was in use.
    port_in_use: bool,
}

fn write_file(path: &Path, contents: &str) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(contents.as_bytes())
}

/// Sends `sig` to the child's process group (it leads one: `process_group(0)`).
fn signal_group(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the process group our own child leads; no memory involved.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
