//! Initdata: the block-device image (magic, length, padding) and the TOML document.
#![no_main]

use cocoon_agent::initdata::Initdata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Initdata::from_image("fuzz", data) {
        let _ = (d.policy(), d.digest_hex(), d.entry("policy.rego"));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(d) = Initdata::parse("fuzz", text) {
            let _ = d.digest_hex();
        }
    }
});
