#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    eeaturn_core::fuzzing::stream_framing(data);
});
