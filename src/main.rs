//! The `pfs` command line.
fn main() {}
