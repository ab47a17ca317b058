//! Private Mosquitto brokers for tests.
//!
//! Each [`Mosquitto`] runs `/usr/sbin/mosquitto -c <conf>` as a child process
//! with its own config in its own temporary directory, listening on
//! 127.0.0.1 only. It never touches the system broker on port 1883.
//!
//! ```no_run
//! use steadfast_chaos::mosquitto::Mosquitto;
//! let mut broker = Mosquitto::builder().password("alice", "secret").start()?;
//! println!("{}", broker.url()); // mqtt://127.0.0.1:PORT
//! broker.kill9();                // crash it
//! broker.restart()?;             // same port, ready again
//! # std::io::Result::Ok(())
//! ```
//!
//! These calls block (at most a few seconds, usually a few milliseconds);
//! from async code that is fine in tests, or wrap them in `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The broker binary.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// The tool that writes password files.
pub const MOSQUITTO_PASSWD: &str = "mosquitto_passwd";

const READY_TIMEOUT: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: usize = 8;
/// Readiness without the "running" log line (log sent elsewhere).
const QUIET_READY: Duration = Duration::from_millis(500);

/// Options for a private broker; see [`Mosquitto::builder`].
#[derive(Debug, Clone)]
pub struct MosquittoBuilder {
    port: Option<u16>,
    users: Vec<(String, String)>,
    persistence: bool,
    max_inflight_messages: u32,
    max_queued_messages: u32,
    extra: Vec<String>,
}

impl Default for MosquittoBuilder {
    fn default() -> Self {
        MosquittoBuilder {
            port: None,
            users: Vec::new(),
            persistence: false,
            max_inflight_messages: 0,
            max_queued_messages: 100_000,
            extra: Vec::new(),
        }
    }
}

impl MosquittoBuilder {
    /// Listen on this port (default: a free port, retried if taken).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Adds a user (repeatable). With any user, `allow_anonymous` is false
    /// and a password file is written with `mosquitto_passwd -b`.
    pub fn password(mut self, user: impl Into<String>, pass: impl Into<String>) -> Self {
        self.users.push((user.into(), pass.into()));
        self
    }

    /// Keep sessions on disk in the broker's temp dir, so they survive
    /// [`Mosquitto::stop`] + [`Mosquitto::restart`] (default: false, memory).
    pub fn persistence(mut self, on: bool) -> Self {
        self.persistence = on;
        self
    }

    /// `max_inflight_messages` (default 0: no limit).
    pub fn max_inflight_messages(mut self, n: u32) -> Self {
        self.max_inflight_messages = n;
        self
    }

    /// `max_queued_messages` (default 100000).
    pub fn max_queued_messages(mut self, n: u32) -> Self {
        self.max_queued_messages = n;
        self
    }

    /// Appends raw lines to the config (repeatable).
    pub fn extra_config(mut self, config: impl Into<String>) -> Self {
        self.extra.push(config.into());
        self
    }

    /// Writes the config, starts the broker and waits until its port accepts
    /// TCP connections. The error names the cause and carries the broker's log.
    pub fn start(self) -> io::Result<Mosquitto> {
        let dir = tempfile::Builder::new()
            .prefix("steadfast-mosquitto-")
            .tempdir()?;
        // Mosquitto started as root drops to the `mosquitto` user unless told
        // `user root`; we do both: say so and keep the files world-readable.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        if !self.users.is_empty() {
            write_password_file(&dir.path().join("passwd"), &self.users)?;
        }
        let conf = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = match self.port {
                Some(p) => p,
                None => crate::free_port(),
            };
            write_file(&conf, &self.config(dir.path(), port))?;
            match spawn_and_wait(&conf, &log, port) {
                Ok(child) => {
                    return Ok(Mosquitto {
                        port,
                        conf,
                        log,
                        child: Some(child),
                        dir,
                    })
                }
                Err(e) if e.port_in_use && self.port.is_none() && attempt < PORT_ATTEMPTS => {}
                Err(e) => return Err(e.error),
            }
        }
    }

    fn config(&self, dir: &Path, port: u16) -> String {
        let mut c = String::new();
        c.push_str(&format!("listener {port} 127.0.0.1\n"));
        c.push_str("user root\n");
        c.push_str("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n");
        c.push_str("log_timestamp true\n");
        if self.users.is_empty() {
            c.push_str("allow_anonymous true\n");
        } else {
            c.push_str("allow_anonymous false\n");
            c.push_str(&format!("password_file {}\n", dir.join("passwd").display()));
        }
        if self.persistence {
            c.push_str("persistence true\n");
            c.push_str(&format!("persistence_location {}/\n", dir.display()));
        } else {
            c.push_str("persistence false\n");
        }
        c.push_str(&format!(
            "max_inflight_messages {}\n",
            self.max_inflight_messages
        ));
        c.push_str(&format!(
            "max_queued_messages {}\n",
            self.max_queued_messages
        ));
        for extra in &self.extra {
            c.push_str(extra);
            if !extra.ends_with('\n') {
                c.push('\n');
            }
        }
        c
    }
}

fn write_file(path: &Path, contents: &str) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(contents.as_bytes())?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

fn write_password_file(path: &Path, users: &[(String, String)]) -> io::Result<()> {
    for (i, (user, pass)) in users.iter().enumerate() {
        let mut cmd = Command::new(MOSQUITTO_PASSWD);
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .arg("-b")
            .arg(path)
            .arg(user)
            .arg(pass)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {MOSQUITTO_PASSWD} (is mosquitto installed?): {e}"),
                )
            })?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{MOSQUITTO_PASSWD} -b failed for user {user:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

/// A private Mosquitto broker (a child process). Dropping it kills the
/// broker and removes its temp dir.
#[derive(Debug)]
pub struct Mosquitto {
    port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    // Last, so the child is killed (Drop) before the dir goes.
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Options, with the defaults: a free port, anonymous access, no
    /// persistence, `max_inflight_messages 0`, `max_queued_messages 100000`.
    pub fn builder() -> MosquittoBuilder {
        MosquittoBuilder::default()
    }

    /// Starts a broker with the default options.
    pub fn start() -> io::Result<Mosquitto> {
        Self::builder().start()
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's temp dir (config, log, password file, persistence).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the broker has logged so far (all its runs).
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

    /// Kills the broker with SIGKILL (a crash: nothing is saved) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the broker with SIGTERM (it closes its clients and saves its
    /// persistence file if enabled), waits up to 5 s, then SIGKILLs.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(c.id()) {
            // SAFETY: plain kill(2) on our own child's pid, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Starts the broker again on the same port with the same config (stops
    /// it first if it runs) and waits until it accepts connections.
    pub fn restart(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            self.stop();
        }
        // The port was ours a moment ago; give a lingering bind a few tries.
        let mut tries = 0;
        loop {
            tries += 1;
            match spawn_and_wait(&self.conf, &self.log, self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) if e.port_in_use && tries < 20 => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.error),
            }
        }
    }
}

/// Why a broker run did not get ready.
struct SpawnError {
    error: io::Error,
    port_in_use: bool,
}

/// Runs the broker (appending its output to `log`) and waits until `port`
/// accepts TCP connections.
fn spawn_and_wait(conf: &Path, log: &Path, port: u16) -> Result<Child, SpawnError> {
    let plain = |error: io::Error| SpawnError {
        error,
        port_in_use: false,
    };
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(plain)?;
    let log_start = log_file.metadata().map(|m| m.len()).unwrap_or(0);
    // This run's part of the log.
    let run_log = || {
        let all = fs::read(log).unwrap_or_default();
        let from = usize::try_from(log_start).unwrap_or(0).min(all.len());
        String::from_utf8_lossy(&all[from..]).into_owned()
    };
    let stdout = log_file.try_clone().map_err(plain)?;
    let mut child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_file)
        .spawn()
        .map_err(|e| {
            plain(io::Error::new(
                e.kind(),
                format!("cannot run {MOSQUITTO}: {e}"),
            ))
        })?;
    let started = Instant::now();
    let deadline = started + READY_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = run_log();
            return Err(SpawnError {
                port_in_use: text.contains("Address already in use"),
                error: io::Error::other(format!(
                    "mosquitto on port {port} exited ({status}) before it was ready; its log:\n{text}"
                )),
            });
        }
        // Our broker says it runs (so its listener is open: another process
        // on the port would have made it fail), and the port answers. If the
        // log goes elsewhere (extra_config), a broker still alive well after
        // the port answered is ours: a failed bind exits at once.
        let says_running = run_log().contains(" running");
        if (says_running || started.elapsed() >= QUIET_READY)
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(plain(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "mosquitto on port {port} not accepting connections after {READY_TIMEOUT:?}; its log:\n{}",
                    run_log()
                ),
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill9();
    }
}
