//! `-d/--debug`: the library's log (its `tracing` events) as plain lines on stderr.
//!
//! Without `-d` nothing is installed and the library's events go nowhere. With it, every event
//! at debug level and above is one line: time, level, the span of the connection attempt
//! (`connection{attempt=2 server=mqtt://host:1883}`) and the event's fields. Colours only when
//! stderr is a terminal. The library never puts a password or authentication data in an
//! event, so these lines are safe to paste into a bug report.

use std::io::IsTerminal;
use std::sync::Once;

use tracing_subscriber::filter::LevelFilter;

/// Installs the stderr log once per process (later calls do nothing); `on` is `-d`.
pub fn init(on: bool) {
    static INIT: Once = Once::new();
    if !on {
        return;
    }
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_max_level(LevelFilter::DEBUG)
            .try_init();
    });
}
