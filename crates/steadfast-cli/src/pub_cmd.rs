//! `steadfast pub`: publish one message, each line of stdin, or generated messages, like
//! mosquitto_pub, across outages: no message is dropped because the broker is away.
//!
//! Messages are handed to the library one after another (so their order is kept) and their
//! acknowledgements are awaited in a window, so `-l` goes as fast as the broker acknowledges.
//! While the connection is down, the library's offline queue takes them; when it is full,
//! the next publish waits for room (backpressure), and so does the reading of stdin.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgAction, ArgGroup, Args};
use steadfast::{
    ByteStr, Client, ClientError, ClientEvent, Message, PayloadFormat, PendingAck, Properties,
    ProtocolVersion, PublishError, QoS, State,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::{
    parse_qos, sleep_until_opt, start_close, usage_exit, ConnArgs, Signals, UsageError,
};
use crate::events::{Outcome, Tracker};

/// Acknowledgements awaited at once, at most.
const WINDOW: usize = 10_000;

const AFTER_HELP: &str = "\
Message sources (exactly one):
  -m MSG            one message
  -l                each line of stdin is a message (blank lines are skipped, as with
                    mosquitto_pub); publishing goes on across outages, and at end of input
                    pub waits until every message is acknowledged (QoS 1/2) or encoded for
                    sending (QoS 0), then disconnects and exits 0
  --count N         N generated messages: the message number, or with --payload-size B,
                    B bytes (the number padded with '.'); --rate R sends R per second
  -n, -f FILE, -s   an empty message, a file's content, all of stdin as one message

No message is dropped because of an outage: while the broker is away, messages wait in the
offline queue, and when it is full, reading stdin waits too. Ctrl-C or SIGTERM disconnects
gracefully (in-flight messages get up to 5 s to finish) and exits 0.

MQTT 5 properties: -D publish content-type text/plain, -D publish user-property KEY VALUE,
also correlation-data, message-expiry-interval, payload-format-indicator, response-topic.

Exit codes: 0 ok, 1 runtime error (for example a message the broker rejected, or a poison
message: the broker closed the connection each time it was sent; the rest goes on), 2 usage
error, 3 refused by the broker (bad credentials, not authorized, banned, ...), 4 gave up
after --max-attempts.

Examples:
  # One retained message at QoS 1
  steadfast pub -h broker.local -t status/door -m open -q 1 -r

  # Stream a log file, one message per line, through outages, with events on stderr
  tail -F app.log | steadfast pub -L mqtts://user:pass@broker.example -t logs/app -l -q 1 --events

  # 10,000 messages of 256 bytes at 500 per second
  steadfast pub -t load/test --count 10000 --payload-size 256 --rate 500 -q 1

  # MQTT 5 properties
  steadfast pub -t cmd/1 -m '{\"on\":true}' -D publish content-type application/json \\
      -D publish user-property origin cli

  # Try 3 times, then give up (exit 4)
  steadfast pub -t x -m y --max-attempts 3 --reconnect-min 100ms";

/// Arguments of `steadfast pub`.
#[derive(Args, Debug)]
#[command(
    after_help = AFTER_HELP,
    group(ArgGroup::new("source").required(true).multiple(false)
        .args(["message", "stdin_line", "count", "null_message", "file", "stdin_file"]))
)]
pub struct PubArgs {
    /// Topic to publish to.
    #[arg(short = 't', long = "topic", value_name = "TOPIC")]
    pub topic: Option<String>,
    /// QoS: 0, 1 or 2.
    #[arg(short = 'q', long = "qos", value_name = "QOS", default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// Retain the message(s).
    #[arg(short = 'r', long = "retain")]
    pub retain: bool,
    /// Publish one message with this payload.
    #[arg(
        short = 'm',
        long = "message",
        value_name = "MSG",
        allow_hyphen_values = true
    )]
    pub message: Option<String>,
    /// Publish each line of stdin as a message, until end of input.
    #[arg(short = 'l', long = "stdin-line")]
    pub stdin_line: bool,
    /// Publish N generated messages.
    #[arg(long = "count", value_name = "N")]
    pub count: Option<u64>,
    /// With --count: messages per second (default: as fast as possible).
    #[arg(long = "rate", value_name = "R")]
    pub rate: Option<f64>,
    /// With --count: payload size in bytes (default: just the message number).
    #[arg(long = "payload-size", value_name = "B")]
    pub payload_size: Option<usize>,
    /// Publish one empty message (clears a retained message with -r).
    #[arg(short = 'n', long = "null-message")]
    pub null_message: bool,
    /// Publish one message with the content of FILE.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Publish all of stdin as one message.
    #[arg(short = 's', long = "stdin-file")]
    pub stdin_file: bool,
    /// An MQTT 5 PUBLISH property: -D publish NAME VALUE (user-property: NAME KEY VALUE).
    #[arg(short = 'D', long = "property", num_args = 3..=4, action = ArgAction::Append,
          value_names = ["publish", "NAME", "VALUE"], allow_hyphen_values = true)]
    pub property: Vec<String>,
    /// Connection.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Where the messages come from.
enum Source {
    One(Bytes),
    Lines,
    Generated {
        count: u64,
        rate: Option<f64>,
        size: Option<usize>,
    },
}

/// Runs `steadfast pub`.
pub fn run(args: PubArgs) -> ExitCode {
    match crate::conn::runtime() {
        Ok(rt) => {
            let code = rt.block_on(publish(args));
            // Do not wait for a blocked stdin read.
            rt.shutdown_timeout(Duration::from_millis(100));
            code
        }
        Err(e) => Outcome::Failed(format!("cannot start the runtime: {e}")).exit(),
    }
}

/// The message sent with each payload: the topic, QoS, retain flag and `-D` properties.
fn message_template(topic: String, qos: QoS, retain: bool, p: Properties) -> Message {
    let mut m = Message::new(topic, Bytes::new()).qos(qos).retain(retain);
    if let Some(v) = p.content_type {
        m = m.content_type(v.to_string());
    }
    if let Some(v) = p.response_topic {
        m = m.response_topic(v.to_string());
    }
    if let Some(v) = p.correlation_data {
        m = m.correlation_data(v);
    }
    if let Some(v) = p.message_expiry_interval {
        m = m.message_expiry(Duration::from_secs(v.into()));
    }
    if let Some(v) = p.payload_format_indicator {
        m = m.payload_format(if v == 1 {
            PayloadFormat::Utf8
        } else {
            PayloadFormat::Bytes
        });
    }
    for (k, v) in p.user_properties {
        m = m.user_property(k.to_string(), v.to_string());
    }
    m
}

/// The PUBLISH properties of `-D publish NAME VALUE`.
fn properties(tokens: &[String], protocol: ProtocolVersion) -> Result<Properties, UsageError> {
    let mut p = Properties::default();
    if tokens.is_empty() {
        return Ok(p);
    }
    if protocol != ProtocolVersion::V5 {
        return Err(UsageError("-D/--property needs MQTT 5 (-V 5)".into()));
    }
    // The values of every -D, in order: COMMAND NAME VALUE, plus a second VALUE for
    // user-property, so each occurrence is found again from its name.
    let mut list: Vec<&[String]> = Vec::new();
    let mut rest = tokens;
    while !rest.is_empty() {
        let n = if rest.get(1).map(String::as_str) == Some("user-property") {
            4
        } else {
            3
        };
        if rest.len() < n {
            return Err(UsageError(format!(
                "-D {}: expected -D publish NAME VALUE",
                rest.join(" ")
            )));
        }
        list.push(&rest[..n]);
        rest = &rest[n..];
    }
    for item in list {
        let cmd = item[0].to_ascii_lowercase();
        if cmd != "publish" {
            return Err(UsageError(format!(
                "-D {}: only PUBLISH properties can be set here (-D publish NAME VALUE)",
                item[0]
            )));
        }
        let name = item[1].as_str();
        let v = item[2].clone();
        let num = |what: &str| -> Result<u32, UsageError> {
            v.parse::<u32>()
                .map_err(|_| UsageError(format!("-D publish {what}: not a number: {v:?}")))
        };
        match name {
            "content-type" => p.content_type = Some(ByteStr::from(v.clone())),
            "response-topic" => {
                steadfast::proto::topic::validate_name(&v)
                    .map_err(|e| UsageError(format!("-D publish response-topic {v:?}: {e}")))?;
                p.response_topic = Some(ByteStr::from(v.clone()));
            }
            "correlation-data" => p.correlation_data = Some(Bytes::from(v.clone().into_bytes())),
            "message-expiry-interval" => p.message_expiry_interval = Some(num(name)?),
            "payload-format-indicator" => match num(name)? {
                n @ (0 | 1) => p.payload_format_indicator = Some(n as u8),
                _ => return Err(UsageError("-D publish payload-format-indicator: 0 or 1".into())),
            },
            "user-property" => p
                .user_properties
                .push((ByteStr::from(v.clone()), ByteStr::from(item[3].clone()))),
            other => {
                return Err(UsageError(format!(
                    "-D publish {other}: unknown property (content-type, correlation-data, \
                     message-expiry-interval, payload-format-indicator, response-topic, user-property)"
                )))
            }
        }
    }
    Ok(p)
}

/// Payload `i` (1-based) of `--count`: the number, padded with '.' to `size` bytes.
fn generated(i: u64, size: Option<usize>) -> Bytes {
    let mut s = i.to_string().into_bytes();
    if let Some(size) = size {
        s.resize(size, b'.');
    }
    Bytes::from(s)
}

/// What happened to the messages.
#[derive(Debug, Default)]
struct Stats {
    sent: u64,
    failed: u64,
    first_error: Option<String>,
    /// Reading the input failed.
    input_error: Option<String>,
}

impl Stats {
    fn fail(&mut self, e: String) {
        self.failed += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Publish(PublishError::Rejected(rc)) => {
            format!("rejected by the broker: {}", rc.name().to_lowercase())
        }
        other => other.to_string(),
    }
}

/// Hands one message to the library (in order) and queues its acknowledgement. `Err` means the
/// client is closed.
async fn send(
    client: &Client,
    template: &Message,
    payload: Bytes,
    acks: &mpsc::Sender<PendingAck>,
    stats: &mut Stats,
) -> Result<(), ()> {
    let p = template.clone().with_payload(payload);
    stats.sent += 1;
    match client.publish_accepted(p).await {
        Ok(ack) => acks.send(ack).await.map_err(|_| ()),
        Err(ClientError::Closed) | Err(ClientError::Publish(PublishError::Closed)) => Err(()),
        Err(e) => {
            stats.fail(describe(&e));
            Ok(())
        }
    }
}

/// Reads the source and publishes; returns when every message was acknowledged. With a
/// durable store (`durable`), it then also waits for a connection, so that the graceful
/// disconnect that follows drains the messages restored from the store of a previous run (for
/// example one killed mid-stream), even when this run published nothing.
async fn produce(client: Client, source: Source, template: Message, durable: bool) -> Stats {
    let (acks, mut rx) = mpsc::channel::<PendingAck>(WINDOW);
    let collector = tokio::spawn(async move {
        let mut s = Stats::default();
        while let Some(ack) = rx.recv().await {
            if let Err(e) = ack.await {
                if let ClientError::Publish(PublishError::Poison { .. }) = e {
                    // Said at once: the rest goes on, and the exit code (1) says it at the end.
                    eprintln!("steadfast: message given up: {}", describe(&e));
                }
                s.fail(describe(&e));
            }
        }
        s
    });
    let mut stats = Stats::default();
    match source {
        Source::One(payload) => {
            let _ = send(&client, &template, payload, &acks, &mut stats).await;
        }
        Source::Lines => {
            let mut input = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
            let mut line = Vec::new();
            loop {
                line.clear();
                match input.read_until(b'\n', &mut line).await {
                    Ok(0) => break,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if line.is_empty() {
                            continue;
                        }
                        let payload = Bytes::copy_from_slice(&line);
                        if send(&client, &template, payload, &acks, &mut stats)
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        stats.input_error = Some(format!("cannot read stdin: {e}"));
                        break;
                    }
                }
            }
        }
        Source::Generated { count, rate, size } => {
            let start = Instant::now();
            for i in 1..=count {
                if let Some(r) = rate {
                    let at = start + Duration::from_secs_f64((i - 1) as f64 / r);
                    tokio::time::sleep_until(at).await;
                }
                if send(&client, &template, generated(i, size), &acks, &mut stats)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(acks);
    if let Ok(acked) = collector.await {
        stats.failed += acked.failed;
        if stats.first_error.is_none() {
            stats.first_error = acked.first_error;
        }
    }
    if durable {
        // A disconnect while not connected ends at once and leaves restored messages in the
        // store; once connected, it lets them finish (within the drain timeout). Dormant and
        // Failed end the process through the events loop.
        client
            .wait_for_state(|s| {
                matches!(
                    s,
                    State::Connected | State::Dormant | State::Failed | State::Closed
                )
            })
            .await;
    }
    stats
}

async fn read_source(args: &PubArgs) -> Result<Source, Outcome> {
    if let Some(m) = &args.message {
        return Ok(Source::One(Bytes::from(m.clone().into_bytes())));
    }
    if args.null_message {
        return Ok(Source::One(Bytes::new()));
    }
    if let Some(f) = &args.file {
        return std::fs::read(f)
            .map(|b| Source::One(Bytes::from(b)))
            .map_err(|e| Outcome::Failed(format!("cannot read {}: {e}", f.display())));
    }
    if args.stdin_file {
        let mut buf = Vec::new();
        return tokio::io::stdin()
            .read_to_end(&mut buf)
            .await
            .map(|_| Source::One(Bytes::from(buf)))
            .map_err(|e| Outcome::Failed(format!("cannot read stdin: {e}")));
    }
    if args.stdin_line {
        return Ok(Source::Lines);
    }
    Ok(Source::Generated {
        count: args.count.unwrap_or(1),
        rate: args.rate,
        size: args.payload_size,
    })
}

async fn publish(args: PubArgs) -> ExitCode {
    let conn = match args.conn.builder() {
        Ok(c) => c,
        Err(e) => return usage_exit(e),
    };
    let topic = match (&args.topic, &conn.url_topic) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) => return usage_exit(UsageError("pub needs a topic: -t TOPIC".into())),
    };
    if let Err(e) = steadfast::proto::topic::validate_name(&topic) {
        return usage_exit(UsageError(format!("bad topic {topic:?}: {e}")));
    }
    if args.count.is_none() && (args.rate.is_some() || args.payload_size.is_some()) {
        return usage_exit(UsageError(
            "--rate and --payload-size go with --count N".into(),
        ));
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return usage_exit(UsageError("--rate must be above 0".into()));
        }
    }
    let properties = match properties(&args.property, conn.protocol) {
        Ok(p) => p,
        Err(e) => return usage_exit(e),
    };
    let source = match read_source(&args).await {
        Ok(s) => s,
        Err(o) => return o.exit(),
    };
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("cannot install signal handlers: {e}")).exit(),
    };
    let builder = match args.conn.with_store(conn.builder) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e).exit(),
    };
    let (client, mut events) = match builder.build() {
        Ok(x) => x,
        Err(e) => return usage_exit(UsageError(e.to_string())),
    };
    let mut tracker = Tracker::new(args.conn.events, conn.protocol, args.conn.no_reconnect);
    let template = message_template(topic, args.qos, args.retain, properties);
    let durable = args.conn.store.is_some();
    let mut work = Some(tokio::spawn(produce(
        client.clone(),
        source,
        template,
        durable,
    )));
    let mut closing: Option<(Outcome, Instant)> = None;

    loop {
        let hard_deadline = closing.as_ref().map(|c| c.1);
        tokio::select! {
            ev = events.recv() => match ev {
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
                // pub subscribes to nothing.
                Some(ClientEvent::Message(_)) => {}
                Some(ev) => crate::events::report_other(&ev),
            },
            r = async { work.as_mut().expect("guarded").await }, if work.is_some() => {
                work = None;
                let outcome = match r {
                    Ok(stats) => {
                        if let Some(e) = stats.input_error {
                            Outcome::Failed(e)
                        } else if stats.failed > 0 {
                            let first = stats.first_error.unwrap_or_default();
                            Outcome::Failed(format!(
                                "{} of {} messages were not delivered; first: {first}",
                                stats.failed, stats.sent
                            ))
                        } else {
                            Outcome::Ok
                        }
                    }
                    Err(e) => Outcome::Failed(format!("publisher task failed: {e}")),
                };
                if closing.is_none() {
                    closing = Some(start_close(&client, outcome));
                }
            }
            _ = signals.recv() => {
                if closing.is_some() {
                    return Outcome::Failed("interrupted again; exiting without waiting".into()).exit();
                }
                // Stop reading; what was handed over gets the drain timeout to finish.
                if let Some(w) = work.take() {
                    w.abort();
                }
                closing = Some(start_close(&client, Outcome::Ok));
            }
            _ = sleep_until_opt(hard_deadline), if hard_deadline.is_some() => {
                let (outcome, _) = closing.take().expect("guarded");
                return outcome.exit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_payloads() {
        assert_eq!(&generated(12, None)[..], b"12");
        assert_eq!(&generated(12, Some(5))[..], b"12...");
        assert_eq!(&generated(123, Some(2))[..], b"12");
        assert_eq!(generated(1, Some(0)).len(), 0);
    }

    #[test]
    fn publish_properties() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let p = properties(
            &v(&[
                "publish",
                "content-type",
                "text/plain",
                "PUBLISH",
                "user-property",
                "k",
                "v",
            ]),
            ProtocolVersion::V5,
        )
        .unwrap();
        assert_eq!(
            p.content_type.as_ref().map(|c| c.as_str()),
            Some("text/plain")
        );
        assert_eq!(p.user_properties.len(), 1);
        assert!(properties(&v(&["publish", "user-property", "k"]), ProtocolVersion::V5).is_err());
        assert!(properties(&v(&["connect", "x", "y"]), ProtocolVersion::V5).is_err());
        assert!(properties(&v(&["publish", "content-type", "x"]), ProtocolVersion::V311).is_err());
    }
}
