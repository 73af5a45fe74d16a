//! The manifest parser and validator, `Manifest::parse`, on arbitrary text in both modes:
//! `Mode::Build` (`pfs manifest`, unknown keys are errors) and `Mode::Run` (`pfs run`,
//! unknown keys are warnings). Nothing reads the file system: trusted-file hashing is
//! the build step's next stage and is not fuzzed here.
//!
//! Checks beyond "no panic": a manifest accepted in build mode is accepted in run mode
//! (run mode is the more lenient), an accepted manifest keeps its text exactly (the
//! simulated measurement covers it), and every error carries a line inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libos::{Manifest, Mode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = text.lines().count().max(1);
    let build = Manifest::parse(text, Mode::Build);
    let run = Manifest::parse(text, Mode::Run);
    for result in [&build, &run] {
        match result {
            Ok((manifest, warnings)) => {
                assert_eq!(manifest.text(), text, "the manifest text changed while parsing");
                let _ = (manifest.entrypoint_in_view(), manifest.view_to_host("/a/../b"));
                for w in warnings {
                    assert!(w.line <= lines + 1, "warning on line {} of {lines}: {w}", w.line);
                }
            }
            Err(e) => {
                assert!(!e.errors.is_empty(), "an error without a diagnostic");
                for d in &e.errors {
                    assert!(d.line <= lines + 1, "error on line {} of {lines}: {d}", d.line);
                }
                let _ = e.to_string();
            }
        }
    }
    if build.is_ok() {
        assert!(run.is_ok(), "accepted by `pfs manifest` but refused by `pfs run`: {:?}", run.err());
    }
});
