//! `steadfast broker` (hidden): the demo's embedded broker (rmqtt) alone, on a loopback port,
//! until killed. The interoperability tests run it as a process so that a broker restart is a
//! real one: every connection closed, every session gone.

use clap::Args;
use std::process::ExitCode;

use crate::demo::broker::{EmbeddedBroker, NAME};
use crate::exit;

/// Arguments of `steadfast broker`.
#[derive(Args, Debug)]
pub struct BrokerArgs {
    /// The port on 127.0.0.1 (0: a free one; the first stdout line says which).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

/// Runs the broker until the process is killed (SIGTERM / SIGINT end it at once).
pub fn run(args: BrokerArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    rt.block_on(async {
        let broker = match EmbeddedBroker::start_on(args.port).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit::RUNTIME);
            }
        };
        println!("{NAME} listening on {}", broker.addr());
        // Runs until a signal; the broker serves in its own tasks.
        let _ = tokio::signal::ctrl_c().await;
        drop(broker);
        ExitCode::from(exit::OK)
    })
}
