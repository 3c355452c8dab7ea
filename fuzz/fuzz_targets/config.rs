//! The config file (TOML), through every check `bridge check-config` makes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = bridge::config::Config::parse(text) {
            let _ = cfg.redacted();
        }
    }
});
