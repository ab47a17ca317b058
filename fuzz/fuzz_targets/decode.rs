//! Decode arbitrary bytes as a stream of packets with both protocol versions and two packet
//! size limits; every packet that decodes must re-encode and decode again to the same packet
//! (`steadfast_proto_testkit::codec::check_decode_roundtrip`). Never panics on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    steadfast_proto_testkit::codec::check_decode_roundtrip(data);
});
