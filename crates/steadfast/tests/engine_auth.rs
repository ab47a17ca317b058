//! Credentials refresh against a real password-protected Mosquitto: a token that expired while
//! the client was offline is replaced by the provider, not treated as a fatal refusal.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steadfast::{Lifecycle, ProtocolVersion, QoS, State};
use steadfast_chaos::mosquitto::Mosquitto;
use support::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn expired_credentials_are_replaced_by_the_provider() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto_with(Mosquitto::builder().password("device", "token-2"));
        for v in [ProtocolVersion::V5, ProtocolVersion::V311] {
            let id = uid(&format!("creds-{}", vname(v)));
            let calls = Arc::new(AtomicU32::new(0));
            let c = calls.clone();
            // The first token the provider hands out has expired; the next one is valid.
            let b = fast(&broker.url(), v, &id).credentials_provider(move || {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                ("device".to_string(), format!("token-{n}").into_bytes())
            });
            let (client, mut r) = start(b, &id);
            r.connected(T).await;
            assert_eq!(client.state(), State::Connected);
            assert_eq!(
                calls.load(Ordering::SeqCst),
                2,
                "asked before each of the two connects"
            );
            assert_eq!(
                r.count(|e| matches!(e, Lifecycle::ConnectFailed { attempt: 1, .. })),
                1,
                "{}: the expired token was refused once",
                vname(v)
            );
            assert_eq!(r.count(|e| matches!(e, Lifecycle::Fatal { .. })), 0);
            // The connection is usable.
            client
                .publish(format!("creds/{id}"), QoS::AtLeastOnce, false, "ok")
                .await
                .expect("publish with the refreshed credentials");
            client.disconnect().await.expect("disconnect");
        }
    });
}
