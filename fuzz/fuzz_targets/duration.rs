//! `--grace`, `--kill-timeout`, `--timeout`, `TimeoutStopSec=`: never panics, never exceeds the
//! 30-day limit (refused, not capped), errors are one line, and the printed form reads back.
#![no_main]

use gracekill::policy::{MAX_DURATION, format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match parse_duration(text) {
        Ok(d) => {
            assert!(d <= MAX_DURATION, "{d:?}");
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("invalid duration"), "{msg}");
            assert!(!msg.contains('\n'), "{msg:?}");
        }
    }
});
