//! `--signal`, `KillSignal=` and the signal half of `--then`: never panics, errors are one line
//! naming the signal, and whatever parses prints back to the same signal.
#![no_main]

use gracekill::Signal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match text.parse::<Signal>() {
        Ok(sig) => {
            let n = sig.as_raw();
            assert!((1..=31).contains(&n) || (34..=64).contains(&n), "{n}");
            assert_eq!(sig.to_string().parse::<Signal>().unwrap(), sig);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("invalid signal"), "{msg}");
            assert!(!msg.contains('\n'), "{msg:?}");
        }
    }
});
