//! `steadfast rr`: MQTT 5 request/response, like mosquitto_rr: subscribe to the response topic,
//! publish one request carrying it (Response Topic) and a fresh Correlation Data, print the
//! first response, exit. Across outages like `sub`: the request waits in the offline queue and
//! the subscription is restored.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use clap::{ArgGroup, Args};
use steadfast::{
    ClientEvent, Message, Properties, ProtocolVersion, Publish, QoS, SubscribeFilter,
    SubscriptionOptions,
};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::conn::{
    parse_duration, parse_qos, sleep_until_opt, start_close, usage_exit, ConnArgs, Signals,
    UsageError,
};
use crate::events::{Outcome, Tracker};
use crate::output::{Format, Style};

const AFTER_HELP: &str = "\
rr subscribes to the response topic (-e), then publishes the request to -t with two MQTT 5
properties: Response Topic (the -e topic) and Correlation Data (random, new for each run).
The responder is expected to publish its answer to the Response Topic with the same
Correlation Data. The first message on the response topic whose Correlation Data matches (or
that carries none, as some responders send) is printed like `sub` prints it (-v, --json, -F,
-N), and rr disconnects and exits 0. Messages with other Correlation Data are ignored.

Exit codes: 0 a response was printed, 1 runtime error (also: no response within -W SECS),
2 usage error (also: -V 311, since MQTT 3.1.1 has no request/response properties), 3 refused
by the broker (also: the response topic refused), 4 gave up after --max-attempts.

Examples:
  # Ask a service and print its answer (at most 5 s)
  steadfast rr -t svc/time/get -e svc/time/reply/$$ -m now -W 5

  # The answer as JSON, with its properties
  steadfast rr -t cmd/light -e cmd/light/ack -m '{\"on\":true}' -q 1 --json";

/// Arguments of `steadfast rr`.
#[derive(Args, Debug)]
#[command(
    after_help = AFTER_HELP,
    group(ArgGroup::new("source").required(true).multiple(false)
        .args(["message", "null_message", "file", "stdin_file"]))
)]
pub struct RrArgs {
    /// The request topic.
    #[arg(short = 't', long = "topic", value_name = "TOPIC")]
    pub topic: Option<String>,
    /// The response topic: subscribed to before the request, and sent as its Response Topic.
    #[arg(short = 'e', long = "response-topic", value_name = "TOPIC")]
    pub response_topic: String,
    /// QoS of the request and of the response subscription: 0, 1 or 2.
    #[arg(short = 'q', long = "qos", value_name = "QOS", default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// The request's payload.
    #[arg(
        short = 'm',
        long = "message",
        value_name = "MSG",
        allow_hyphen_values = true
    )]
    pub message: Option<String>,
    /// An empty request.
    #[arg(short = 'n', long = "null-message")]
    pub null_message: bool,
    /// The request's payload is the content of FILE.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// The request's payload is all of stdin.
    #[arg(short = 's', long = "stdin-file")]
    pub stdin_file: bool,
    /// Exit 1 when no response arrived within SECS of start (also a human duration: 500ms).
    #[arg(short = 'W', long = "timeout", value_name = "SECS", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print "topic payload".
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Print the response as one JSON object (as `sub --json`).
    #[arg(long, conflicts_with = "verbose")]
    pub json: bool,
    /// Print the response in this format (as `sub -F`).
    #[arg(short = 'F', long = "format", value_name = "FORMAT", value_parser = Format::parse,
          conflicts_with_all = ["verbose", "json"])]
    pub format: Option<Format>,
    /// No newline after the response.
    #[arg(short = 'N', long = "no-newline")]
    pub no_newline: bool,
    /// Connection.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Runs `steadfast rr`.
pub fn run(args: RrArgs) -> ExitCode {
    match crate::conn::runtime() {
        Ok(rt) => {
            let code = rt.block_on(request(args));
            rt.shutdown_timeout(Duration::from_millis(100));
            code
        }
        Err(e) => Outcome::Failed(format!("cannot start the runtime: {e}")).exit(),
    }
}

/// Correlation data for one run: 16 hex digits from the OS-seeded hasher, the time and the pid.
fn correlation() -> Bytes {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    Bytes::from(format!("{:016x}", h.finish()))
}

/// Whether `m` answers the request with correlation data `id`.
fn answers(m: &Publish, response_topic: &str, id: &[u8]) -> bool {
    m.topic.as_str() == response_topic
        && m.properties
            .correlation_data
            .as_ref()
            .is_none_or(|c| c[..] == *id)
}

async fn payload(args: &RrArgs) -> Result<Bytes, Outcome> {
    if let Some(m) = &args.message {
        return Ok(Bytes::from(m.clone().into_bytes()));
    }
    if let Some(f) = &args.file {
        return std::fs::read(f)
            .map(Bytes::from)
            .map_err(|e| Outcome::Failed(format!("cannot read {}: {e}", f.display())));
    }
    if args.stdin_file {
        let mut buf = Vec::new();
        return tokio::io::stdin()
            .read_to_end(&mut buf)
            .await
            .map(|_| Bytes::from(buf))
            .map_err(|e| Outcome::Failed(format!("cannot read stdin: {e}")));
    }
    Ok(Bytes::new())
}

async fn request(args: RrArgs) -> ExitCode {
    let conn = match args.conn.builder() {
        Ok(c) => c,
        Err(e) => return usage_exit(e),
    };
    if conn.protocol != ProtocolVersion::V5 {
        return usage_exit(UsageError(
            "rr needs MQTT 5 (-V 5): MQTT 3.1.1 has no Response Topic".into(),
        ));
    }
    let topic = match (&args.topic, &conn.url_topic) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) => return usage_exit(UsageError("rr needs a request topic: -t TOPIC".into())),
    };
    for (flag, t) in [("-t", &topic), ("-e", &args.response_topic)] {
        if let Err(e) = steadfast::proto::topic::validate_name(t) {
            return usage_exit(UsageError(format!("{flag}: bad topic {t:?}: {e}")));
        }
    }
    if args.timeout == Some(Duration::ZERO) {
        return usage_exit(UsageError("-W SECS must be above 0".into()));
    }
    let body = match payload(&args).await {
        Ok(b) => b,
        Err(o) => return o.exit(),
    };
    let style = match &args.format {
        Some(f) => Style::Format(f.clone()),
        None if args.json => Style::Json,
        None if args.verbose => Style::Verbose,
        None => Style::Payload,
    };
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("cannot install signal handlers: {e}")).exit(),
    };
    let builder = match args
        .conn
        .with_store(conn.builder.subscription_identifiers(false))
    {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e).exit(),
    };
    let (client, mut events) = match builder.build() {
        Ok(x) => x,
        Err(e) => return usage_exit(UsageError(e.to_string())),
    };
    let mut tracker = Tracker::new(args.conn.events, conn.protocol, args.conn.no_reconnect);
    let id = correlation();
    let request = Message::new(topic, body)
        .qos(args.qos)
        .response_topic(args.response_topic.as_str())
        .correlation_data(id.clone());
    // Subscribe first, then publish: a response cannot come before the subscription.
    let mut exchange = Some({
        let client = client.clone();
        let filter = SubscribeFilter {
            filter: args.response_topic.as_str().into(),
            options: SubscriptionOptions {
                qos: args.qos,
                ..Default::default()
            },
        };
        tokio::spawn(async move {
            let codes = client
                .subscribe_with(vec![filter], Properties::default())
                .await
                .map_err(|e| Outcome::Failed(e.to_string()))?;
            if let Some(rc) = codes.iter().find(|c| !c.is_success()) {
                return Err(Outcome::Refused(format!(
                    "subscription to the response topic refused: {}",
                    rc.name().to_lowercase()
                )));
            }
            client
                .send(request)
                .await
                .map(|_| ())
                .map_err(|e| Outcome::Failed(format!("the request was not delivered: {e}")))
        })
    });
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let mut closing: Option<(Outcome, Instant)> = None;
    let stdout = std::io::stdout();

    loop {
        let hard_deadline = closing.as_ref().map(|c| c.1);
        let ev = tokio::select! {
            ev = events.recv() => ev,
            r = async { exchange.as_mut().expect("guarded").await }, if exchange.is_some() => {
                exchange = None;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(outcome)) => {
                        if closing.is_none() {
                            closing = Some(start_close(&client, outcome));
                        }
                    }
                    Err(e) => {
                        if closing.is_none() {
                            closing = Some(start_close(&client, Outcome::Failed(format!("request task failed: {e}"))));
                        }
                    }
                }
                continue;
            }
            _ = sleep_until_opt(deadline), if deadline.is_some() && closing.is_none() => {
                let secs = args.timeout.map(humantime::format_duration).map(|d| d.to_string()).unwrap_or_default();
                closing = Some(start_close(&client, Outcome::Failed(format!("no response within {secs}"))));
                continue;
            }
            _ = signals.recv() => {
                if closing.is_some() {
                    return Outcome::Failed("interrupted again; exiting without waiting".into()).exit();
                }
                closing = Some(start_close(&client, Outcome::Ok));
                continue;
            }
            _ = sleep_until_opt(hard_deadline), if hard_deadline.is_some() => {
                let (outcome, _) = closing.take().expect("guarded");
                return outcome.exit();
            }
        };
        match ev {
            None => {
                return match closing {
                    Some((outcome, _)) => outcome.exit(),
                    None => Outcome::Failed("the client ended unexpectedly".into()).exit(),
                }
            }
            Some(ClientEvent::Lifecycle { at, event }) => {
                if let Some(outcome) = tracker.on_lifecycle(at, &event) {
                    return outcome.exit();
                }
                if tracker.disconnected {
                    return closing.map(|c| c.0).unwrap_or(Outcome::Ok).exit();
                }
            }
            Some(ClientEvent::Message(m)) => {
                if closing.is_some() || !answers(m.as_publish(), &args.response_topic, &id) {
                    continue;
                }
                let line = crate::output::render(
                    &style,
                    args.no_newline,
                    m.as_publish(),
                    SystemTime::now(),
                );
                let mut out = stdout.lock();
                let outcome = match out.write_all(&line).and_then(|_| out.flush()) {
                    Ok(()) => Outcome::Ok,
                    Err(e) => Outcome::Failed(format!("cannot write the response: {e}")),
                };
                closing = Some(start_close(&client, outcome));
            }
            Some(ev) => crate::events::report_other(&ev),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_matched_by_topic_and_correlation_data() {
        let msg = |topic: &str, corr: Option<&'static [u8]>| Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: steadfast::ByteStr::from(topic.to_string()),
            pkid: 0,
            properties: Properties {
                correlation_data: corr.map(Bytes::from_static),
                ..Properties::default()
            }
            .into(),
            payload: Bytes::new(),
        };
        let id = b"0123456789abcdef";
        assert!(answers(&msg("r", Some(id)), "r", id));
        assert!(answers(&msg("r", None), "r", id));
        assert!(!answers(&msg("r", Some(b"other")), "r", id));
        assert!(!answers(&msg("s", Some(id)), "r", id));
        assert_ne!(correlation(), correlation());
        assert_eq!(correlation().len(), 16);
    }
}
