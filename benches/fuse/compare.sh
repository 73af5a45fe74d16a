#!/usr/bin/env bash
# compare.sh - pfs mount vs gocryptfs vs a plain directory, same disk, one run.
#
# Usage: benches/fuse/compare.sh [ROUNDS]     (as root; needs fio, gocryptfs, fuse3)
#
# Builds the release `pfs`, then for each round and each target (plain directory, gocryptfs,
# pfs) mounts a fresh backing directory under $COMPARE_ROOT (default /tmp/pfs-compare, the
# same ext4 disk for all) and runs the measuring tool benches/fuse/fsbench.sh (seq write 1 GiB
# + fsync, cold and warm seq read, 4 KiB random read/write QD1 with fio psync O_DIRECT,
# 5,000 small files create / ls -lR / read / rm). Afterwards it writes a 4 GiB file through
# pfs and samples the daemon's resident memory. Prints a markdown table with pfs/gocryptfs
# ratios (throughput: higher is better; times: pfs time / gocryptfs time, lower is better).
set -euo pipefail
export LC_ALL=C
ROUNDS=${1:-1}
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

for r in $(seq "$ROUNDS"); do
  for name in plain gocryptfs pfs; do
    mount_target $name
    echo "# round $r: $name on $MNT (daemon pid ${PID:-none})" >&2
    peak=0
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
mount_target pfs
peak=0
dd if=/dev/zero of="$MNT/big" bs=1M count=4096 conv=fsync status=none &
DD=$!
while kill -0 $DD 2>/dev/null; do v=$(rss_kib "$PID"); (( v > peak )) && peak=$v; sleep 0.1; done
wait $DD
rm -f "$MNT/big"
unmount_target pfs
echo "$peak" > "$OUT/pfs.rss4g"

# ---- table ----
python3 - "$OUT" "$ROUNDS" <<'PY'
import sys, glob, statistics
out, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    vals = {}
    for r in range(1, rounds + 1):
        for line in open(f"{out}/{name}.{r}.txt"):
            if line.startswith('#') or not line.strip(): continue
            k, v, *_ = line.split()
            try: vals.setdefault(k, []).append(float(v))
            except ValueError: pass
    return {k: statistics.median(v) for k, v in vals.items()}
res = {n: load(n) for n in ("plain", "gocryptfs", "pfs")}
rows = [("seq write 1 GiB + fsync", "seq_write", "MiB/s", True, 1.5),
        ("seq read, cold", "seq_read_cold", "MiB/s", True, 2.0),
        ("seq read, warm", "seq_read_warm", "MiB/s", True, 1.5),
        ("4 KiB rand read QD1", "rand_read_4k", "IOPS", True, 1.5),
        ("4 KiB rand write QD1", "rand_write_4k", "IOPS", True, 2.0),
        ("5,000 files: create + sync", "small_create", "s", False, 0.8),
        ("5,000 files: ls -lR", "small_ls", "s", False, 0.8),
        ("5,000 files: read all", "small_read", "s", False, 0.8),
        ("5,000 files: rm -rf + sync", "small_rm", "s", False, 0.8)]
print(f"| workload | plain ext4 | gocryptfs | pfs | pfs / gocryptfs | target |")
print("|---|---|---|---|---|---|")
for label, key, unit, higher, target in rows:
    p, g, f = (res[n].get(key, float('nan')) for n in ("plain", "gocryptfs", "pfs"))
    ratio = f / g if g else float('nan')
    tgt = f"≥ {target}×" if higher else f"≤ {target}×"
    ok = (ratio >= target) if higher else (ratio <= target)
    print(f"| {label} ({unit}) | {p:g} | {g:g} | {f:g} | {ratio:.2f}× {'✓' if ok else '✗'} | {tgt} |")
small = lambda n: sum(res[n].get(k, 0) for k in ("small_create", "small_ls", "small_read", "small_rm"))
print(f"| 5,000 files: all four phases (s) | {small('plain'):.2f} | {small('gocryptfs'):.2f} | {small('pfs'):.2f} | {small('pfs')/small('gocryptfs'):.2f}× | ≤ 0.8× |")
for n in ("gocryptfs", "pfs"):
    cpu = [res[n].get(k) for k in ("cpu_seq_write", "cpu_seq_read_cold")]
    print(f"| daemon CPU, write / cold read (s), {n} | | | | {cpu[0]} / {cpu[1]} | |")
def rss(n):
    try: return max(int(open(f).read().strip() or 0) for f in glob.glob(f"{out}/{n}.*.rss")) / 1024
    except ValueError: return float('nan')
print(f"| daemon peak RSS during fsbench (MiB) | - | {rss('gocryptfs'):.0f} | {rss('pfs'):.0f} | | |")
print(f"| pfs daemon peak RSS writing a 4 GiB file (MiB) | | | {int(open(out + '/pfs.rss4g').read())/1024:.0f} | | < 100 |")
PY
