//! The stored policy (`user.gracekill.policy` xattr), which a delegated user can write: never
//! panics, accepts only valid policies, and what it accepts round-trips exactly.
#![no_main]

use gracekill::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match Policy::from_text(text) {
        Ok(p) => {
            p.validate().unwrap();
            assert_eq!(Policy::from_text(&p.to_text()).unwrap(), p);
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
});
