#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    eeaturn::fuzzing::config_parse(data);
});
