//! libFuzzer entry point for [`sluice_fuzz::stream_entry`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::stream_entry(data));
