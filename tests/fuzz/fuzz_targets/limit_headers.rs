//! libFuzzer entry point for [`sluice_fuzz::limit_headers`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::limit_headers(data));
