#!/usr/bin/env bash
# pjdfstest.sh - the POSIX suite pjdfstest (Rust rewrite, crates.io `pjdfstest` 0.2.2) run as
# root from inside a real `pfs mount --allow-other`, checked against a committed list of
# expected failures.
#
# Usage: tests/posix/pjdfstest.sh [--fs pfs|gocryptfs|dir] [--raw] [--results FILE] [PATTERN...]
#
#   --fs NAME      what to test: `pfs` (default), `gocryptfs` (-allow_other, defaults) or `dir`
#                  (the plain tmpfs directory), for comparisons
#   --raw          ignore the expected-failure list; report every failure
#   --expected F   the expected-failure list (default: tests/posix/pjdfstest-expected.tsv)
#   --results FILE write one line per test case: NAME STATUS (ok, FAILED, skipped,
#                  expected, UNEXPECTED-PASS)
#   PATTERN        run only the test cases whose names contain one of the patterns
#
# The backing directory lives on a size-limited tmpfs (PJDFSTEST_TMPFS_SIZE, default 512m), so a
# runaway write or truncate can never fill the machine's disk. The suite's default dummy users
# (`tests`) do not exist on Debian, so the configuration names nobody/nogroup and daemon/daemon;
# allow_remount stays false. With the list (tests/posix/pjdfstest-expected.tsv: NAME<TAB>REASON),
# the run fails on any failure that is not listed, on any listed test that passes, and on any
# listed name that is not a test case of the suite. The last line is `pjdfstest: N passed,
# N failed, N skipped`.
#
# Environment: PFS (default: target/debug/pfs, built if missing), PJDFSTEST_PFS_OPTIONS (more
# `pfs mount` options, e.g. `--attr-timeout 0`), PJDFSTEST (default: pjdfstest
# on PATH, else $CARGO_HOME/bin/pjdfstest), PJDFSTEST_WORK (scratch parent, default /var/tmp).
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
EXPECTED=$HERE/pjdfstest-expected.tsv

fs=pfs raw=0 results="" patterns=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --fs) fs=$2; shift 2 ;;
    --raw) raw=1; shift ;;
    --results) results=$2; shift 2 ;;
    --expected) EXPECTED=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "pjdfstest.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) patterns+=("$1"); shift ;;
  esac
done
case $fs in pfs|gocryptfs|dir) ;; *) echo "pjdfstest.sh: --fs must be pfs, gocryptfs or dir" >&2; exit 2 ;; esac
[[ $(id -u) -eq 0 ]] || { echo "pjdfstest.sh: must run as root (pjdfstest switches users, mounts tmpfs)" >&2; exit 2; }

PJDFSTEST=${PJDFSTEST:-$(command -v pjdfstest || echo "${CARGO_HOME:-$HOME/.cargo}/bin/pjdfstest")}
[[ -x $PJDFSTEST ]] || {
  echo "pjdfstest.sh: $PJDFSTEST not found; install it with: cargo install pjdfstest --version 0.2.2 --locked" >&2
  exit 2
}
if [[ $fs == pfs ]]; then
  PFS=${PFS:-$REPO/target/debug/pfs}
  [[ -x $PFS ]] || (cd "$REPO" && cargo build -q -p pfs --bin pfs)
fi
[[ $fs != gocryptfs ]] || command -v gocryptfs >/dev/null || {
  echo "pjdfstest.sh: gocryptfs missing (apt-get install gocryptfs)" >&2; exit 2; }

work=$(mktemp -d "${PJDFSTEST_WORK:-/var/tmp}/pfs-pjdfstest.XXXXXX")
chmod 0755 "$work"
back=$work/tmpfs mnt=$work/mnt
mkdir -p "$back" "$mnt" "$work/secondary"
cleanup() {
  set +e
  if mountpoint -q "$mnt"; then
    case $fs in
      pfs) "$PFS" umount "$mnt" || umount -l "$mnt" ;;
      gocryptfs) fusermount3 -u "$mnt" || umount -l "$mnt" ;;
    esac
  fi
  [[ -n ${gpid:-} ]] && wait "$gpid" 2>/dev/null
  mountpoint -q "$back" && umount "$back"
  rm -rf "$work"
}
trap cleanup EXIT
mount -t tmpfs -o "size=${PJDFSTEST_TMPFS_SIZE:-512m},mode=0755" tmpfs "$back"
mkdir -m 0755 "$back/enc"

case $fs in
  pfs)
    head -c 16 /dev/urandom > "$work/key"
    # shellcheck disable=SC2086 # PJDFSTEST_PFS_OPTIONS holds several options
    "$PFS" mount --allow-other ${PJDFSTEST_PFS_OPTIONS:-} -w "$work/key" "$back/enc" "$mnt" 2>> "$work/daemon.log" ;;
  gocryptfs)
    gocryptfs -init -q -scryptn 10 -extpass "echo pjdfstest" "$back/enc" >/dev/null
    gocryptfs -fg -q -allow_other -extpass "echo pjdfstest" "$back/enc" "$mnt" 2>> "$work/daemon.log" &
    gpid=$!
    for _ in $(seq 200); do mountpoint -q "$mnt" && break; sleep 0.05; done
    mountpoint -q "$mnt" || { echo "pjdfstest.sh: gocryptfs did not mount" >&2; cat "$work/daemon.log" >&2; exit 1; } ;;
  dir) mnt=$back/enc ;;
esac

# The configuration: every feature Linux has, the dummy users Debian has, and (unless --raw)
# the expected failures.
config=$work/pjdfstest.toml
{
  printf '[features]\nposix_fallocate = {}\nutime_now = {}\nutimensat = {}\nrename_ctime = {}\n\n'
  printf '[settings]\nnaptime = 0.01\nallow_remount = false\n'
  if [[ $raw -eq 0 && $fs == pfs ]]; then
    printf 'expected_failures = [\n'
    awk -F '\t' '!/^#/ && NF { printf "  \"%s\",\n", $1 }' "$EXPECTED"
    printf ']\n'
  fi
  printf '\n[dummy_auth]\nentries = [["nobody", "nogroup"], ["daemon", "daemon"]]\n'
} > "$config"

start=$(date +%s)
set +e
"$PJDFSTEST" -c "$config" -p "$mnt" -s "$work/secondary" "${patterns[@]}" > "$work/output" 2>&1
status=$?
set -e
elapsed=$(( $(date +%s) - start ))

# One line per test case: NAME STATUS. Failure details follow their case's line in the output.
awk '
  /^[a-z_0-9]+(::[a-z_0-9]+)+ +ok$/                 { print $1, "ok"; next }
  /^[a-z_0-9]+(::[a-z_0-9]+)+ +FAILED$/             { print $1, "FAILED"; next }
  /^[a-z_0-9]+(::[a-z_0-9]+)+ +skipped$/            { print $1, "skipped"; next }
  /^[a-z_0-9]+(::[a-z_0-9]+)+ +failed as expected$/ { print $1, "expected"; next }
  /^[a-z_0-9]+(::[a-z_0-9]+)+ +PASSED UNEXPECTEDLY$/ { print $1, "UNEXPECTED-PASS"; next }
' "$work/output" > "$work/results"
[[ -z $results ]] || cp "$work/results" "$results"

count() { awk -v s="$1" '$2 == s' "$work/results" | wc -l; }
ok=$(count ok) failed=$(count FAILED) skipped=$(count skipped) expected=$(count expected)
unexpected_pass=$(count UNEXPECTED-PASS)

# Listed names the suite does not have (a typo, or a test the suite renamed) and listed tests
# that were skipped are errors too: the list must describe what actually runs.
stale=0
if [[ $raw -eq 0 && $fs == pfs && ${#patterns[@]} -eq 0 ]]; then
  while IFS=$'\t' read -r name reason; do
    [[ -z $name || $name == \#* ]] && continue
    if [[ -z $reason ]]; then echo "pjdfstest.sh: $name is listed without a reason" >&2; stale=$((stale + 1)); fi
    st=$(awk -v n="$name" '$1 == n { print $2 }' "$work/results")
    case $st in
      expected|UNEXPECTED-PASS) ;;
      "") echo "pjdfstest.sh: listed $name is not a test case of this pjdfstest" >&2; stale=$((stale + 1)) ;;
      *) echo "pjdfstest.sh: listed $name was $st, not run to failure" >&2; stale=$((stale + 1)) ;;
    esac
  done < "$EXPECTED"
fi

if [[ $failed -gt 0 || $unexpected_pass -gt 0 ]]; then
  echo "---- failures (tests/posix/pjdfstest.sh, $fs) ----"
  # Each failing case with the lines that explain it.
  awk '/ +(FAILED|PASSED UNEXPECTEDLY)$/ { show = 1; print; next }
       /^[a-z_0-9]+(::[a-z_0-9]+)+ / { show = 0 }
       /^Summary/ { show = 0 }
       show' "$work/output"
  if [[ $fs == pfs && -s $work/daemon.log ]]; then
    echo "---- daemon log (last 40 lines) ----"
    tail -n 40 "$work/daemon.log"
  fi
fi
grep '^Summary' "$work/output" || { echo "pjdfstest.sh: pjdfstest did not finish (exit $status):" >&2; tail -n 30 "$work/output" >&2; exit 1; }
echo "pjdfstest on $fs: $ok ok, $failed failed, $expected failed as expected ($EXPECTED), $unexpected_pass passed unexpectedly, $skipped skipped, ${elapsed}s"
if [[ $raw -eq 1 || $fs != pfs ]]; then
  echo "pjdfstest: $ok passed, $failed failed, $skipped skipped"
  exit 0
fi
bad=$((failed + unexpected_pass + stale))
# Expected failures count as skipped in the closing line: they are neither passes nor new failures.
echo "pjdfstest: $ok passed, $bad failed, $((skipped + expected)) skipped"
[[ $bad -eq 0 ]]
