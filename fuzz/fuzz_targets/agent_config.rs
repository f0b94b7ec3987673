//! The agent's kernel-cmdline parser, and its TOML config file format. No environment,
//! no config file (a cmdline naming one is skipped: that would read the filesystem).
#![no_main]

use cocoon_agent::config::{keys, AgentConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if !text.contains(keys::CONFIG_FILE) {
        let _ = AgentConfig::load(None, text, |_| None);
    }
    if let Ok(mut config) = toml::from_str::<AgentConfig>(text) {
        config.bound_timeouts(&mut Vec::new());
    }
});
