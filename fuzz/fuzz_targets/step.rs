//! `--then SIG:DUR`: never panics, never yields a SIGKILL step, errors are one line, and a
//! parsed step prints back to itself.
#![no_main]

use gracekill::{Signal, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match text.parse::<Step>() {
        Ok(step) => {
            assert_ne!(step.signal, Signal::KILL);
            assert_eq!(step.to_string().parse::<Step>().unwrap(), step);
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
});
