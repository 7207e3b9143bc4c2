#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| robustd::fuzz::safetensors(data));
