#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    eeaturn::fuzzing::api_body(data);
});
