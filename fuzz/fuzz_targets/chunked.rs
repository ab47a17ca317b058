//! The input (after a first byte that seeds the split points) fed to the decoder in chunks
//! split at arbitrary points must decode to the same packets, and end the same way, as the
//! whole buffer (`steadfast_proto_testkit::codec::check_chunked`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    steadfast_proto_testkit::codec::check_chunked(data);
});
