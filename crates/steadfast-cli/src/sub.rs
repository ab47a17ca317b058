//! `steadfast sub`: subscribe and print messages, like mosquitto_sub, across outages.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{ArgAction, Args};
use steadfast::proto::CommandError;
use steadfast::{
    ClientError, ClientEvent, Lifecycle, Properties, QoS, ReasonCode, Received, SubscribeFilter,
    SubscriptionOptions,
};
use tokio::time::Instant;

use crate::conn::{
    parse_duration, parse_qos, sleep_until_opt, start_close, usage_exit, ConnArgs, Signals,
    UsageError,
};
use crate::events::{Outcome, Tracker};
use crate::output::{Format, Style};

const AFTER_HELP: &str = "\
Output (stdout, flushed per message; each followed by a newline unless -N):
  default   the payload, like mosquitto_sub
  -v        \"topic payload\"
  --json    one JSON object per message:
            {\"topic\",\"qos\",\"retain\",\"dup\",\"payload\"} (\"payload_b64\" instead of \"payload\"
            for bytes that are not UTF-8), plus \"properties\" when the MQTT 5 message has any:
            payload_format_indicator, message_expiry_interval, content_type, response_topic,
            correlation_data (base64), subscription_identifiers, user_properties ([[key, value], ...])
  -F FMT    mosquitto_sub's format codes: %t topic, %p payload, %q QoS, %r retain (0/1),
            %l payload length, %x / %X payload in hex, %I receive time (RFC 3339, UTC),
            %U receive time (Unix seconds.nanoseconds), %j JSON (tst, topic, qos, retain,
            payloadlen, payload), MQTT 5 properties %C content type, %D correlation data,
            %E message expiry, %F payload format, %R response topic, %P user properties
            (key:value ...), %% a %; escapes \\n \\t \\r \\0 \\a \\e \\v \\\\

Which messages: -T FILTER leaves out messages whose topic matches it; -R leaves out retained
ones (sent at subscription time, possibly stale); --retained-only prints retained ones only and
exits 0 at the first message that is not retained. Left-out messages do not count for -C.
-U FILTER unsubscribes (after the -t subscriptions; with -c, from the stored session).
-E exits 0 once the broker has answered every subscribe and unsubscribe.

The subscriber keeps running across outages: it reconnects with backoff and restores its
subscriptions. Ctrl-C or SIGTERM disconnects gracefully and exits 0.

Exit codes: 0 ok (also after -C COUNT, -W SECS, Ctrl-C), 1 runtime error, 2 usage error,
3 refused by the broker (bad credentials, not authorized, banned, ...; also every filter
refused, at the first subscription or on resubscription), 4 gave up after --max-attempts.

Examples:
  # Everything under sensors/, with topics
  steadfast sub -h broker.local -t 'sensors/#' -v

  # Two filters at QoS 1, as JSON, with lifecycle events on stderr
  steadfast sub -L mqtt://user:pass@broker.local -t a/+ -t b/# -q 1 --json --events

  # Wait for one message (at most 10 s without one) and exit
  steadfast sub -t jobs/done -C 1 -W 10

  # Resume a persistent session across restarts
  steadfast sub -i worker-1 -c -q 1 -t jobs/#

  # Register a persistent subscription and exit; later, remove it
  steadfast sub -i worker-1 -c -q 1 -t jobs/# -E
  steadfast sub -i worker-1 -c -U jobs/# -E

  # Timestamped lines, without the heartbeat topic
  steadfast sub -t 'sensors/#' -T sensors/heartbeat -F '%I %t %p'

  # Give up after 5 failed attempts (exit 4), retrying every 2 s
  steadfast sub -t x --backoff constant --reconnect-min 2s --max-attempts 5";

/// Arguments of `steadfast sub`.
#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct SubArgs {
    /// Topic filter to subscribe to (repeatable).
    #[arg(short = 't', long = "topic", value_name = "FILTER", action = ArgAction::Append)]
    pub topics: Vec<String>,
    /// Maximum QoS of the subscriptions: 0, 1 or 2.
    #[arg(short = 'q', long = "qos", value_name = "QOS", default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// Exit 0 after COUNT messages.
    #[arg(short = 'C', long = "count", value_name = "COUNT")]
    pub count: Option<u64>,
    /// Exit 0 after SECS without a message (also a human duration: 500ms, 1m).
    #[arg(short = 'W', long = "timeout", value_name = "SECS", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print "topic payload".
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Print one JSON object per message.
    #[arg(long, conflicts_with = "verbose")]
    pub json: bool,
    /// Print each message in this format (mosquitto_sub's % codes; see below).
    #[arg(short = 'F', long = "format", value_name = "FORMAT", value_parser = Format::parse,
          conflicts_with_all = ["verbose", "json"])]
    pub format: Option<Format>,
    /// No newline after each message.
    #[arg(short = 'N', long = "no-newline")]
    pub no_newline: bool,
    /// Leave out messages whose topic matches FILTER (repeatable).
    #[arg(short = 'T', long = "filter-out", value_name = "FILTER", action = ArgAction::Append)]
    pub filter_out: Vec<String>,
    /// Leave out retained messages (stale ones sent at subscription time).
    #[arg(short = 'R', long = "no-retained")]
    pub no_retained: bool,
    /// Print retained messages only; exit 0 at the first message that is not retained.
    #[arg(long = "retained-only", conflicts_with = "no_retained")]
    pub retained_only: bool,
    /// Unsubscribe from FILTER (repeatable), after the -t subscriptions.
    #[arg(short = 'U', long = "unsubscribe", value_name = "FILTER", action = ArgAction::Append)]
    pub unsubscribe: Vec<String>,
    /// Exit 0 once the broker has answered every subscribe (and -U unsubscribe).
    #[arg(short = 'E', long = "exit-on-subscribe")]
    pub exit_on_subscribe: bool,
    /// Connection.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Runs `steadfast sub`.
pub fn run(args: SubArgs) -> ExitCode {
    match crate::conn::runtime() {
        Ok(rt) => rt.block_on(sub(args)),
        Err(e) => Outcome::Failed(format!("cannot start the runtime: {e}")).exit(),
    }
}

impl SubArgs {
    fn style(&self) -> Style {
        match &self.format {
            Some(f) => Style::Format(f.clone()),
            None if self.json => Style::Json,
            None if self.verbose => Style::Verbose,
            None => Style::Payload,
        }
    }

    /// Whether a message is printed (and counted for -C): not filtered out by -T or -R.
    fn shown(&self, m: &Received) -> bool {
        let stale = self.no_retained && m.retain();
        let filtered = self
            .filter_out
            .iter()
            .any(|f| steadfast::proto::topic::matches(f, m.topic()));
        !stale && !filtered
    }
}

async fn sub(args: SubArgs) -> ExitCode {
    let conn = match args.conn.builder() {
        Ok(c) => c,
        Err(e) => return usage_exit(e),
    };
    let mut filters = args.topics.clone();
    if let Some(t) = conn.url_topic.clone() {
        filters.push(t);
    }
    if filters.is_empty() && args.unsubscribe.is_empty() {
        return usage_exit(UsageError(
            "sub needs a topic filter: -t FILTER (or -U FILTER to unsubscribe)".into(),
        ));
    }
    for (flag, f) in filters
        .iter()
        .map(|f| ("", f))
        .chain(args.filter_out.iter().map(|f| ("-T ", f)))
        .chain(args.unsubscribe.iter().map(|f| ("-U ", f)))
    {
        if let Err(e) = steadfast::proto::topic::validate_filter(f) {
            return usage_exit(UsageError(format!("{flag}bad topic filter {f:?}: {e}")));
        }
    }
    let style = args.style();
    if args.count == Some(0) {
        return usage_exit(UsageError("-C COUNT must be at least 1".into()));
    }
    if args.timeout == Some(Duration::ZERO) {
        return usage_exit(UsageError("-W SECS must be above 0".into()));
    }
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("cannot install signal handlers: {e}")).exit(),
    };
    // Subscription identifiers only route messages inside a client; sub has no use for them
    // and they would show up in every message's properties.
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

    let subscribe = (!filters.is_empty()).then(|| {
        let client = client.clone();
        let list: Vec<SubscribeFilter> = filters
            .iter()
            .map(|f| SubscribeFilter {
                filter: f.as_str().into(),
                options: SubscriptionOptions {
                    qos: args.qos,
                    ..Default::default()
                },
            })
            .collect();
        tokio::spawn(async move { client.subscribe_with(list, Properties::default()).await })
    });
    let mut subscribe = subscribe;
    // -U: sent once the subscriptions are answered (or at once without -t).
    let unsubscribe_list = args.unsubscribe.clone();
    let start_unsubscribe = |client: &steadfast::Client| {
        (!unsubscribe_list.is_empty()).then(|| {
            let client = client.clone();
            let list = unsubscribe_list.clone();
            tokio::spawn(async move { client.unsubscribe_many(list).await })
        })
    };
    let mut unsubscribe = if subscribe.is_none() {
        start_unsubscribe(&client)
    } else {
        None
    };
    // The filters the broker granted and has not refused since (on a resubscription).
    let mut live: Vec<String> = Vec::new();

    let mut received: u64 = 0;
    let mut idle_deadline = args.timeout.map(|t| Instant::now() + t);
    // Set once we are closing: the outcome to report after `disconnected`.
    let mut closing: Option<(Outcome, Instant)> = None;
    let stdout = std::io::stdout();

    loop {
        let hard_deadline = closing.as_ref().map(|c| c.1);
        let ev = tokio::select! {
            ev = events.recv() => ev,
            r = async { subscribe.as_mut().expect("guarded").await }, if subscribe.is_some() => {
                subscribe = None;
                match r {
                    Ok(Ok(codes)) => {
                        for (f, rc) in filters.iter().zip(&codes) {
                            if rc.is_success() {
                                live.push(f.clone());
                            } else {
                                eprintln!("steadfast: subscription to {f:?} refused: {}", rc_name(*rc));
                            }
                        }
                        if live.is_empty() && closing.is_none() {
                            closing = Some(start_close(&client, Outcome::Refused("every subscription was refused".into())));
                        }
                        unsubscribe = start_unsubscribe(&client);
                        if args.exit_on_subscribe && unsubscribe.is_none() && closing.is_none() {
                            closing = Some(start_close(&client, Outcome::Ok));
                        }
                    }
                    Ok(Err(ClientError::Command(CommandError::Invalid(e)))) => {
                        return usage_exit(UsageError(e.to_string()));
                    }
                    Ok(Err(ClientError::Refused(rc))) => {
                        if closing.is_none() {
                            closing = Some(start_close(&client, Outcome::Refused(format!("subscription refused: {}", rc_name(rc)))));
                        }
                    }
                    // The client closed: its lifecycle events say why.
                    Ok(Err(_)) | Err(_) => {}
                }
                continue;
            }
            r = async { unsubscribe.as_mut().expect("guarded").await }, if unsubscribe.is_some() => {
                unsubscribe = None;
                match r {
                    Ok(Ok(codes)) => {
                        for (f, rc) in args.unsubscribe.iter().zip(&codes) {
                            if !rc.is_success() {
                                eprintln!("steadfast: unsubscribe from {f:?}: {}", rc_name(*rc));
                            }
                        }
                        if args.exit_on_subscribe && closing.is_none() {
                            closing = Some(start_close(&client, Outcome::Ok));
                        }
                    }
                    Ok(Err(ClientError::Command(CommandError::Invalid(e)))) => {
                        return usage_exit(UsageError(e.to_string()));
                    }
                    Ok(Err(ClientError::InvalidTopic(e))) => {
                        return usage_exit(UsageError(format!("unsubscribe: {e}")));
                    }
                    // The client closed: its lifecycle events say why.
                    Ok(Err(_)) | Err(_) => {}
                }
                continue;
            }
            _ = sleep_until_opt(idle_deadline), if idle_deadline.is_some() && closing.is_none() => {
                closing = Some(start_close(&client, Outcome::Ok));
                continue;
            }
            _ = signals.recv() => {
                if closing.is_some() {
                    // A second signal: stop waiting for the graceful close.
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
                if let Lifecycle::ResubscribeFailed {
                    filter,
                    error: CommandError::Refused(rc),
                } = &event
                {
                    // The broker no longer grants it (an ACL change): nothing arrives for it.
                    live.retain(|f| f.as_str() != filter.as_str());
                    eprintln!(
                        "steadfast: subscription to {:?} refused on resubscription: {}",
                        filter.as_str(),
                        rc_name(*rc)
                    );
                    if live.is_empty() && closing.is_none() {
                        let why = format!(
                            "every subscription was refused on resubscription (last: {:?}: {})",
                            filter.as_str(),
                            rc_name(*rc)
                        );
                        closing = Some(start_close(&client, Outcome::Refused(why)));
                    }
                }
                if tracker.disconnected {
                    return closing.map(|c| c.0).unwrap_or(Outcome::Ok).exit();
                }
            }
            Some(ClientEvent::Message(m)) => {
                if closing.is_some() || !args.shown(&m) {
                    continue;
                }
                if args.retained_only && !m.retain() {
                    // The retained messages have all arrived: done.
                    closing = Some(start_close(&client, Outcome::Ok));
                    continue;
                }
                let line = crate::output::render(
                    &style,
                    args.no_newline,
                    m.as_publish(),
                    SystemTime::now(),
                );
                let mut out = stdout.lock();
                if out.write_all(&line).and_then(|_| out.flush()).is_err() {
                    // stdout is gone (a closed pipe): stop quietly.
                    closing = Some(start_close(&client, Outcome::Ok));
                    continue;
                }
                received += 1;
                if let Some(t) = args.timeout {
                    idle_deadline = Some(Instant::now() + t);
                }
                if args.count.is_some_and(|c| received >= c) {
                    closing = Some(start_close(&client, Outcome::Ok));
                }
            }
            Some(ev) => crate::events::report_other(&ev),
        }
    }
}

fn rc_name(rc: ReasonCode) -> String {
    rc.name().to_lowercase()
}
