# Shared by .ci/fuzz-smoke and .ci/fuzz-long (sourced, not run).
#
# cargo-fuzz passes nightly-only rustc flags (-Zsanitizer=address, -Cpasses=sancov-module,
# -Zsanitizer-coverage-*) and libfuzzer-sys needs them; only stable rustc is installed, so
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept them. It affects these fuzz builds
# only (never the product build, which .ci/run does without it).
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

# The crates that carry a fuzz/ directory (pfs-core: PF parsing; attest: certificates,
# quotes, evidence, policy, key-server wire; libos: manifest parser and template
# renderer). See docs/RELIABILITY.md, "Fuzzing".
FUZZ_CRATES=(pfs-core attest libos)

# Build options shared by build and run, so `cargo fuzz run` never rebuilds: release
# with debug assertions (cargo-fuzz's default) and FUZZ_SANITIZER (`address` or `none`;
# each script picks its default). Both fuzz crates share one target directory per
# sanitizer under target/ (not committed).
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target/fuzz-build-$FUZZ_SANITIZER}
fuzz_build_flags=(--sanitizer "$FUZZ_SANITIZER" --target-dir "$FUZZ_TARGET_DIR")

# libFuzzer options common to every run: fail on any single allocation above 512 MiB
# (the engines must never allocate by a size read from input; enforced through the
# sanitizer's malloc hooks, so with FUZZ_SANITIZER=address only; without it a huge
# allocation still fails as an abort or through the RSS limit), on RSS above 2 GiB, and
# on one input running longer than 30 s.
fuzz_libfuzzer_flags=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=30 -print_final_stats=1)

ensure_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
  fi
}

# fuzz_targets CRATE: the target names of CRATE's fuzz/Cargo.toml.
fuzz_targets() {
  (cd "$1" && cargo fuzz list)
}

# stat NAME LOG: a libFuzzer -print_final_stats value.
fuzz_stat() {
  local v; v=$(sed -n "s/^stat::$1: *//p" "$2" | tail -n 1); echo "${v:--}"
}

# The last coverage line's "cov" and "corp" values (e.g. "1234 567/890Kb").
fuzz_last_cov() {
  grep -E '^#[0-9]+' "$1" | tail -n 1 | sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+)\/([0-9A-Za-z]+).*/\1 \2 \3 \4/p'
}
