#!/usr/bin/env bash
# pjdfstest-compare.sh - the POSIX suite pjdfstest on pfs mount, gocryptfs and a plain tmpfs
# directory, side by side.
#
# Usage: benches/fuse/pjdfstest-compare.sh      (as root; needs pjdfstest, gocryptfs, fuse3)
#
# Runs tests/posix/pjdfstest.sh --raw (every failure counted, the expected-failure list
# ignored) once per file system, each over its own 512 MiB tmpfs: `pfs mount --allow-other`
# (defaults), `gocryptfs -allow_other` (defaults) and the tmpfs itself. Set PFS_BEFORE to
# another pfs binary (e.g. one built from an older commit) to add a column for it. Prints a
# markdown table of failed test cases per syscall (pjdfstest's test files), then the totals.
# Per-case results are kept in $COMPARE_OUT (default /var/tmp/pfs-pjdfstest-compare).
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
RUN=$REPO/tests/posix/pjdfstest.sh
OUT=${COMPARE_OUT:-/var/tmp/pfs-pjdfstest-compare}
rm -rf "$OUT"; mkdir -p "$OUT"

(cd "$REPO" && cargo build -q -p pfs --bin pfs)
columns=()
run() { # $1 = column name, then the runner's arguments
  local name=$1; shift
  echo "== $name" >&2
  "$RUN" --raw --results "$OUT/$name.res" "$@" > "$OUT/$name.log" 2>&1 || {
    echo "pjdfstest-compare: the run on $name failed; see $OUT/$name.log" >&2; exit 1; }
  tail -n 1 "$OUT/$name.log" >&2
  columns+=("$name")
}
if [[ -n ${PFS_BEFORE:-} ]]; then PFS=$PFS_BEFORE run pfs-before --fs pfs; fi
PFS=$REPO/target/debug/pfs run pfs --fs pfs
run gocryptfs --fs gocryptfs
run tmpfs --fs dir

# Failed cases per syscall (the first part of a case name is the file of the original suite).
{
  printf '| test file | cases |'
  for c in "${columns[@]}"; do printf ' %s |' "$c"; done
  printf '\n|---|---|'
  for _ in "${columns[@]}"; do printf -- '---|'; done
  printf '\n'
  awk '{ split($1, p, "::"); print p[1] }' "$OUT/${columns[0]}.res" | sort -u | while read -r file; do
    printf '| %s | %s |' "$file" "$(awk -v f="$file" 'index($1, f "::") == 1 && $2 != "skipped"' "$OUT/${columns[0]}.res" | wc -l)"
    for c in "${columns[@]}"; do
      printf ' %s |' "$(awk -v f="$file" 'index($1, f "::") == 1 && $2 == "FAILED"' "$OUT/$c.res" | wc -l)"
    done
    printf '\n'
  done
  printf '| **all** | %s |' "$(awk '$2 != "skipped"' "$OUT/${columns[0]}.res" | wc -l)"
  for c in "${columns[@]}"; do printf ' **%s** |' "$(awk '$2 == "FAILED"' "$OUT/$c.res" | wc -l)"; done
  printf '\n\nSkipped everywhere (remounts not allowed, no chflags/ACLs on Linux): %s cases.\n' \
    "$(awk '$2 == "skipped"' "$OUT/${columns[0]}.res" | wc -l)"
  for c in "${columns[@]}"; do
    printf '\nFailed on %s:' "$c"
    awk '$2 == "FAILED" { printf " %s", $1 }' "$OUT/$c.res"
    printf '\n'
  done
} | tee "$OUT/table.md"
