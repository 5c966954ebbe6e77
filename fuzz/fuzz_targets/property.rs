//! `run -p NAME=VALUE` (systemd-run properties), applied one after another as the CLI does:
//! never panics, errors are one line, and a property never makes SIGKILL a stop step.
#![no_main]

use gracekill::policy::apply_property;
use gracekill::{Policy, Signal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut policy = Policy::default();
    let mut timeout = None;
    for prop in text.split('\n') {
        match apply_property(&mut policy, &mut timeout, prop) {
            Ok(()) => assert!(policy.steps.iter().all(|s| s.signal != Signal::KILL)),
            Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
        }
    }
    if policy.validate().is_ok() {
        assert_eq!(Policy::from_text(&policy.to_text()).unwrap(), policy);
    }
});
