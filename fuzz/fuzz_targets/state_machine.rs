//! State-machine fuzzing of the sans-IO `Connection`: arbitrary sequences of application
//! commands (publish QoS 0/1/2, subscribe, unsubscribe, disconnect, wake), transport events
//! (open, error, EOF), virtual-time advances and broker input (CONNACK with random
//! session_present / reason / Receive Maximum, PUBACK / PUBREC / PUBCOMP / SUBACK for in-use or
//! random packet ids, PUBLISH, PUBREL, DISCONNECT, raw random bytes), with invariants checked
//! after every step.
//!
//! The interpreter and its invariants live in `steadfast_proto_testkit::fuzz_sm` so that a bounded,
//! seeded run of it is part of `cargo test` (`tests/core_fuzz_smoke.rs`).
//!
//! Run: `cargo +nightly fuzz run state_machine` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    steadfast_proto_testkit::fuzz_sm::run(data);
});
