//! `dial_by_aivoicebot` request bodies, as JSON or an HTML form, through
//! everything the API checks before a call is placed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    let ctype = match kind % 3 {
        0 => "application/json",
        1 => "application/x-www-form-urlencoded",
        _ => "",
    };
    let cfg = bridge::config::Config::default();
    let guard = bridge::netguard::Guard::new(&cfg.outbound.allow_networks).unwrap();
    let _ = bridge::api::parse_dial_request(ctype, body, &cfg, &guard);
});
