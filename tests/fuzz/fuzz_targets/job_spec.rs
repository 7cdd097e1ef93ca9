//! libFuzzer entry point for [`sluice_fuzz::job_spec`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::job_spec(data));
