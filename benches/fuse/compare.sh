#!/usr/bin/env bash
# compare.sh - plain ext4 vs gocryptfs vs pfs mount, same disk, interleaved in one run.
#
# Usage: benches/fuse/compare.sh [ROUNDS]     (as root; needs fio, gocryptfs, fuse3)
#
# Builds the release `pfs`, then for each round runs plain directory, gocryptfs and pfs one
# after another (the order rotates each round, so no target always runs first or last),
# each on a fresh backing directory under $COMPARE_ROOT (default /tmp/pfs-compare, the same
# ext4 disk for all), with the measuring tool benches/fuse/fsbench.sh (seq write + fsync,
# cold and warm seq read, 4 KiB random read/write QD1 with fio psync O_DIRECT, small files
# create / ls -lR / read / rm; sizes from FSBENCH_* as fsbench.sh documents). The load
# average is recorded before every target of every round. Afterwards (unless RSS4G=0) it
# writes a 4 GiB file through pfs and samples the daemon's resident memory.
#
# Prints, and writes to $COMPARE_ROOT/results/table.md, a markdown table in the form of
# docs/PERFORMANCE.md: each cell is the median of the rounds with its min–max, then the
# pfs/gocryptfs ratio of the medians (throughput: higher is better; times: pfs time /
# gocryptfs time, lower is better) and, for cold reads, pfs / plain ext4. Below it: the load
# averages of every round. ROUNDS defaults to 5.
set -euo pipefail
export LC_ALL=C
ROUNDS=${1:-5}
RSS4G=${RSS4G:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
FSBENCH=${FSBENCH:-$HERE/fsbench.sh}
[[ -f $FSBENCH ]] || { echo "compare: $FSBENCH not found (set FSBENCH)" >&2; exit 2; }
for t in fio gocryptfs fusermount3; do
  command -v $t >/dev/null || { echo "compare: $t missing (apt-get install fio gocryptfs fuse3)" >&2; exit 2; }
done
ROOT=${COMPARE_ROOT:-/tmp/pfs-compare}
OUT=$ROOT/results
rm -rf "$ROOT"; mkdir -p "$OUT"

(cd "$REPO" && cargo build --release -q -p pfs)
PFS=$REPO/target/release/pfs
head -c 16 /dev/urandom > "$ROOT/key"

MNT=""; PID=""
cleanup() {
  if [[ -n $MNT ]] && mountpoint -q "$MNT"; then fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"; fi
}
trap cleanup EXIT

mount_target() { # $1 = name; sets MNT and PID
  local name=$1 back=$ROOT/$1-back
  rm -rf "$back" "$ROOT/$name-mnt"; mkdir -p "$back" "$ROOT/$name-mnt"
  MNT=$ROOT/$name-mnt; PID=""
  case $name in
    plain) MNT=$back ;;
    gocryptfs)
      gocryptfs -init -q -scryptn 10 -extpass "echo PW" "$back" >/dev/null
      gocryptfs -fg -q -extpass "echo PW" "$back" "$MNT" & PID=$!
      for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.05; done ;;
    pfs)
      "$PFS" mount -w "$ROOT/key" "$back" "$MNT"
      PID=$(awk -v m="$MNT" '$2 == m { sub("pfs:", "", $1); print $1 }' /proc/mounts) ;;
  esac
}

unmount_target() { # $1 = name
  case $1 in
    plain) ;;
    gocryptfs) fusermount3 -u "$MNT"; wait "$PID" 2>/dev/null || true ;;
    pfs) "$PFS" umount "$MNT" ;;
  esac
  MNT=""
}

rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

TARGETS=(plain gocryptfs pfs)
for r in $(seq "$ROUNDS"); do
  for i in 0 1 2; do
    name=${TARGETS[$(( (i + r - 1) % 3 ))]}
    mount_target $name
    echo "$r $name $(cut -d' ' -f1-4 /proc/loadavg)" >> "$OUT/loadavg"
    echo "# round $r: $name on $MNT (daemon pid ${PID:-none}), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    if [[ -n $PID ]]; then
      ( p=0; while kill -0 "$PID" 2>/dev/null; do v=$(rss_kib "$PID"); (( v > p )) && p=$v; echo $p > "$OUT/$name.$r.rss"; sleep 0.2; done ) &
      SAMPLER=$!
    fi
    bash "$FSBENCH" -l "$name" ${PID:+-p $PID} "$MNT" > "$OUT/$name.$r.txt"
    if [[ -n $PID ]]; then kill $SAMPLER 2>/dev/null || true; wait $SAMPLER 2>/dev/null || true; fi
    unmount_target $name
  done
done

# Daemon memory while writing a 4 GiB file through pfs.
if [[ $RSS4G == 1 ]]; then
  mount_target pfs
  peak=0
  dd if=/dev/zero of="$MNT/big" bs=1M count=4096 conv=fsync status=none &
  DD=$!
  while kill -0 $DD 2>/dev/null; do v=$(rss_kib "$PID"); (( v > peak )) && peak=$v; sleep 0.1; done
  wait $DD
  rm -f "$MNT/big"
  unmount_target pfs
  echo "$peak" > "$OUT/pfs.rss4g"
fi

# ---- table ----
python3 - "$OUT" "$ROUNDS" "${FSBENCH_SEQ_MB:-1024}" "${FSBENCH_RAND_MB:-256}" "${FSBENCH_FILES:-5000}" <<'PY' | tee "$OUT/table.md"
import sys, glob, os, statistics
out, rounds = sys.argv[1], int(sys.argv[2])
seq_mb, rand_mb, files = sys.argv[3], sys.argv[4], int(sys.argv[5])
def load(name):
    vals = {}
    for r in range(1, rounds + 1):
        for line in open(f"{out}/{name}.{r}.txt"):
            if line.startswith('#') or not line.strip(): continue
            k, v, *_ = line.split()
            try: vals.setdefault(k, []).append(float(v))
            except ValueError: pass
    return vals
raw = {n: load(n) for n in ("plain", "gocryptfs", "pfs")}
med = {n: {k: statistics.median(v) for k, v in raw[n].items()} for n in raw}
def num(x):
    if x != x: return "–"
    if x >= 10000: return f"{x/1000:.1f}k"
    if x >= 100: return f"{x:,.0f}"
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"
def cell(n, key):
    v = raw[n].get(key)
    if not v: return "–"
    m = statistics.median(v)
    return f"{num(m)} ({num(min(v))}–{num(max(v))})" if len(v) > 1 else num(m)
nf = f"{files:,}"
rows = [(f"seq write {seq_mb} MiB + fsync", "seq_write", "MiB/s", True, 1.5),
        ("seq read, cold", "seq_read_cold", "MiB/s", True, 2.0),
        ("seq read, warm", "seq_read_warm", "MiB/s", True, 1.5),
        ("4 KiB random read QD1", "rand_read_4k", "IOPS", True, 1.5),
        ("4 KiB random write QD1", "rand_write_4k", "IOPS", True, 2.0),
        (f"{nf} files: create + sync", "small_create", "s", False, 0.8),
        (f"{nf} files: ls -lR", "small_ls", "s", False, 0.8),
        (f"{nf} files: read all", "small_read", "s", False, 0.8),
        (f"{nf} files: rm -rf + sync", "small_rm", "s", False, 0.8)]
print(f"Medians of {rounds} interleaved rounds, (min–max) in brackets.\n")
print("| workload | plain ext4 | gocryptfs | pfs | pfs / gocryptfs | pfs / ext4 | goal |")
print("|---|---|---|---|---|---|---|")
for label, key, unit, higher, target in rows:
    p, g, f = (med[n].get(key, float('nan')) for n in ("plain", "gocryptfs", "pfs"))
    ratio = f / g if g else float('nan')
    ok = (ratio >= target) if higher else (ratio <= target)
    vs_ext4 = f"{f / p:.2f}×" if p and p == p and key.startswith("seq_read") else ""
    goal = f"≥ {target}×" if higher else f"≤ {target}×"
    print(f"| {label} ({unit}) | {cell('plain', key)} | {cell('gocryptfs', key)} | {cell('pfs', key)} "
          f"| {ratio:.2f}× {'✓' if ok else '✗'} | {vs_ext4} | {goal} |")
for n in ("gocryptfs", "pfs"):
    cpu = [med[n].get(k, float('nan')) for k in ("cpu_seq_write", "cpu_seq_read_cold")]
    print(f"| daemon CPU, write / cold read (s), {n} | | | | {cpu[0]:.2f} / {cpu[1]:.2f} | | |")
def rss(n):
    try: return max(int(open(f).read().strip() or 0) for f in glob.glob(f"{out}/{n}.*.rss")) / 1024
    except ValueError: return float('nan')
print(f"| daemon peak RSS during fsbench (MiB) | | {rss('gocryptfs'):.0f} | {rss('pfs'):.0f} | | | |")
if os.path.exists(out + '/pfs.rss4g'):
    print(f"| pfs daemon peak RSS writing a 4 GiB file (MiB) | | | {int(open(out + '/pfs.rss4g').read())/1024:.0f} | | | < 100 |")
print("\nLoad average (1, 5, 15 min; runnable/total tasks) before each target:\n")
by_round = {}
for line in open(out + '/loadavg'):
    r, name, *load = line.split()
    by_round.setdefault(r, []).append(f"{name} {' '.join(load)}")
for r, entries in by_round.items():
    print(f"- round {r}: " + "; ".join(entries))
PY
