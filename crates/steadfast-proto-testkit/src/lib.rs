//! Test machinery for `steadfast-proto`, kept out of the library so that its public API is only
//! what users may call.
//!
//! - [`codec`]: the codec properties shared by the cargo-fuzz targets in `fuzz/` and the
//!   stable-toolchain smoke tests (`tests/codec_fuzz_smoke.rs`, `tests/codec_corrupt.rs`).
//! - [`fuzz_sm`]: the state-machine fuzz interpreter and its invariants, shared by the
//!   `state_machine` fuzz target and `tests/core_fuzz_smoke.rs`.
//!
//! It enables `steadfast-proto`'s `testkit` feature, which adds a few inspection methods to
//! [`steadfast_proto::Connection`] (packet ids in flight, filters by subscription identifier,
//! incoming QoS 2 ids pending). Not published.
#![deny(missing_docs)]

pub mod codec;
pub mod fuzz_sm;
