#!/usr/bin/env bash
# busy-core.sh - `pfs encrypt`/`decrypt` vs `cp` with one core kept busy by `yes`.
#
#   benches/cli/busy-core.sh [ROUNDS]     (default 5; SIZE_MIB=256, WORK_DIR=/var/tmp/...)
#
# Page cache warm. `yes > /dev/null` runs beside every round (started and killed by PID).
# Each round times cp, then pfs encrypt and decrypt with the stages overlapped
# (PFS_OVERLAP=1, the default) and serial (PFS_OVERLAP=0). Prints the medians, min–max and
# ratios to cp, and the load average of every round.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
SIZE_MIB=${SIZE_MIB:-256}
WORK=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/pfs-busy.XXXXXX")}
cargo build --release -q -p pfs
P=$(pwd)/target/release/pfs
cd "$WORK"
head -c $((SIZE_MIB << 20)) /dev/urandom > plain
rm -f k.key; "$P" keygen -q -o k.key
"$P" encrypt -q -w k.key -i plain -o enc.pf
yes > /dev/null & YES=$!
trap 'kill $YES 2>/dev/null || true; rm -f "$WORK"/{plain,enc.pf,cp.out,enc.out,dec.out,k.key}' EXIT
t() { local s e; s=$(date +%s%N); "$@" > /dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
: > times
for r in $(seq "$ROUNDS"); do
  echo "# round $r load $(cut -d' ' -f1-4 /proc/loadavg)" | tee -a times
  rm -f cp.out; echo "cp $(t cp plain cp.out)" >> times
  for m in 1 0; do
    rm -f enc.out dec.out
    echo "encrypt_overlap=$m $(PFS_OVERLAP=$m t "$P" encrypt -q -w k.key -i plain -o enc.out)" >> times
    echo "decrypt_overlap=$m $(PFS_OVERLAP=$m t "$P" decrypt -q -w k.key -i enc.pf -o dec.out)" >> times
  done
done
python3 - times <<'PY'
import sys, statistics, collections
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    if line.startswith('#'): continue
    k, v = line.split(); d[k].append(int(v))
cp = statistics.median(d['cp'])
print("| command | median (ms) | min–max | median / cp |\n|---|---|---|---|")
for k, v in d.items():
    m = statistics.median(v)
    print(f"| {k} | {m:g} | {min(v)}–{max(v)} | {m / cp:.2f}× |")
PY
