//! The template renderer (`libos::template::render`, the first stage of `pfs manifest`)
//! on arbitrary template text and `-D` defines, then the manifest parser on what it
//! rendered, as `pfs manifest` does.
//!
//! Input: `-D` arguments, one per line, then a NUL byte, then the template; without a NUL
//! the whole input is the template and there are no defines.
//!
//! The helpers that start processes are kept out: `ldd(...)` and
//! `python.get_sys_path(...)` run programs named by the template (as `gramine-manifest`
//! does: templates are the builder's own code), so inputs naming them are skipped, and
//! `python.*` points at an interpreter that does not exist, so it fails at once. Loops
//! are bounded by the renderer's fuel, which is what this target checks: no template
//! may hang `pfs manifest`.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use libos::template::{DefineValue, RenderOptions, render};
use libos::{Manifest, Mode};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let (defines, source) = match input.split_once('\0') {
        Some((defines, source)) => (defines.lines().map(DefineValue::parse_define).collect(), source),
        None => (Vec::new(), input),
    };
    if source.contains("ldd") || source.contains("get_sys_path") {
        return;
    }
    let options = RenderOptions {
        defines,
        env: BTreeMap::from([
            ("HOME".to_owned(), "/home/fuzz".to_owned()),
            ("EDMM".to_owned(), "1".to_owned()),
        ]),
        python: "/nonexistent/pfs-fuzz/python3".into(),
        libos: "/opt/pfs/bin/pfs".into(),
    };
    match render("fuzz.manifest.template", source, &options) {
        Ok(rendered) => {
            let _ = Manifest::parse(&rendered, Mode::Build);
        }
        Err(e) => {
            assert!(e.to_string().contains("fuzz.manifest.template"), "error without the template name: {e}");
        }
    }
});
