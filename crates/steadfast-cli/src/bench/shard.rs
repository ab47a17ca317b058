//! A proxy shard: a child process of `steadfast bench --clients N` that runs one
//! [`steadfast_chaos::Proxy`] in front of the broker and reports the CONNECTs it saw.
//!
//! A proxied connection costs two sockets, and a process may hold only `RLIMIT_NOFILE` of
//! them; so the fleet is spread over several shards, each in its own process, and the clients
//! stay alone in the bench's process (which keeps its memory figure clean, too).
//!
//! The protocol on stdin/stdout, one line each:
//! - the shard prints `listening ADDR` once it accepts connections;
//! - `stats` prints `times N`, then N lines of CLOCK_MONOTONIC ns (one per CONNECT seen,
//!   oldest first, refused ones included), then `end`;
//! - `quit` or the end of stdin stops it.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use steadfast_chaos::Proxy;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::util::{raise_nofile_limit, MonoClock};

/// Runs the shard until told to quit.
pub fn run(upstream: SocketAddr) -> ExitCode {
    raise_nofile_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("steadfast bench shard: {e}");
            return ExitCode::from(crate::exit::RUNTIME);
        }
    };
    let code = rt.block_on(async move {
        let clock = MonoClock::new();
        let proxy = match Proxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("steadfast bench shard: cannot listen: {e}");
                return ExitCode::from(crate::exit::RUNTIME);
            }
        };
        let handle = proxy.handle();
        println!("listening {}", proxy.local_addr());
        let _ = std::io::stdout().flush();
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match line.trim() {
                "stats" => {
                    let stats = handle.stats();
                    let mut out = String::with_capacity(stats.connect_times.len() * 21 + 32);
                    out.push_str(&format!("times {}\n", stats.connect_times.len()));
                    for t in &stats.connect_times {
                        out.push_str(&clock.ns(*t).to_string());
                        out.push('\n');
                    }
                    out.push_str("end\n");
                    let mut stdout = std::io::stdout().lock();
                    let _ = stdout.write_all(out.as_bytes());
                    let _ = stdout.flush();
                }
                "quit" => break,
                _ => {}
            }
        }
        drop(proxy);
        ExitCode::SUCCESS
    });
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

/// The bench's side of a shard.
pub struct Shard {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Where clients connect.
    pub addr: SocketAddr,
}

impl Shard {
    /// Starts `steadfast bench --proxy-shard UPSTREAM` (this same binary).
    pub async fn start(upstream: SocketAddr) -> Result<Shard, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .args(["bench", "--proxy-shard", &upstream.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start a proxy shard: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), out.next_line())
            .await
            .map_err(|_| "the proxy shard did not start in time".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("the proxy shard exited")?;
        let addr = first
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected line from the proxy shard: {first:?}"))?;
        Ok(Shard {
            child,
            stdin,
            out,
            addr,
        })
    }

    /// Every CONNECT the shard saw so far, in CLOCK_MONOTONIC ns.
    pub async fn connect_times(&mut self) -> Result<Vec<u64>, String> {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(b"stats\n")
            .await
            .map_err(|e| e.to_string())?;
        self.stdin.flush().await.map_err(|e| e.to_string())?;
        let read = async {
            let head = self
                .out
                .next_line()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("shard gone")?;
            let n: usize = head
                .strip_prefix("times ")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("unexpected line from the proxy shard: {head:?}"))?;
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let l = self
                    .out
                    .next_line()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("shard gone")?;
                times.push(l.parse::<u64>().map_err(|e| e.to_string())?);
            }
            let end = self.out.next_line().await.map_err(|e| e.to_string())?;
            if end.as_deref() != Some("end") {
                return Err(format!("unexpected line from the proxy shard: {end:?}"));
            }
            Ok::<_, String>(times)
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), read)
            .await
            .map_err(|_| "the proxy shard did not answer in time".to_string())?
    }

    /// Stops the shard.
    pub async fn stop(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.stdin.write_all(b"quit\n").await;
        drop(self.stdin);
        if tokio::time::timeout(std::time::Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
