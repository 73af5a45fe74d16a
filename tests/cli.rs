//! Integration tests of the `pfs` binary: each test runs the built program on real files
//! in a temporary directory, as a user would. One test binary; modules live in `cli/`.

#[path = "cli/util.rs"]
mod util;

#[path = "cli/bench.rs"]
mod bench;
#[path = "cli/check.rs"]
mod check;
#[path = "cli/dirs.rs"]
mod dirs;
#[path = "cli/keygen_info.rs"]
mod keygen_info;
#[path = "cli/roundtrip.rs"]
mod roundtrip;
#[path = "cli/vectors.rs"]
mod vectors;
