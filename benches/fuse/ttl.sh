#!/usr/bin/env bash
# ttl.sh - what the kernel's attribute and entry cache TTLs of `pfs mount` cost.
#
# Usage: benches/fuse/ttl.sh [ROUNDS]        (as root; needs fio, fuse3)
#
# Per round, mounts a fresh backing directory under $TTL_ROOT (default /var/tmp/pfs-ttl, the
# disk under test) once per configuration, in an order that rotates every round, and runs
# benches/fuse/fsbench.sh on it: `ttl=1s` (the default, --attr-timeout 1 --entry-timeout 1)
# and `ttl=0` (--attr-timeout 0 --entry-timeout 0); with PFS_OTHER=BINARY also `other`, that
# binary at its defaults (e.g. a build of an older commit). Prints every round's figures with
# the load average, then per metric the median and min-max of the rounds and the ratio of
# each median to the `ttl=1s` one.
#
# Environment: PFS (default: target/release/pfs, built), PFS_OTHER, TTL_ROOT, and fsbench's
# own FSBENCH_* (defaults here: SEQ_MB=64 RAND_MB=64 RUNTIME=3 FILES=2000).
set -euo pipefail
export LC_ALL=C
ROUNDS=${1:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=${TTL_ROOT:-/var/tmp/pfs-ttl}
export FSBENCH_SEQ_MB=${FSBENCH_SEQ_MB:-64} FSBENCH_RAND_MB=${FSBENCH_RAND_MB:-64}
export FSBENCH_RUNTIME=${FSBENCH_RUNTIME:-3} FSBENCH_FILES=${FSBENCH_FILES:-2000}
for t in fio fusermount3; do
  command -v $t >/dev/null || { echo "ttl: $t missing (apt-get install fio fuse3)" >&2; exit 2; }
done
if [[ -z ${PFS:-} ]]; then
  (cd "$REPO" && cargo build --release -q -p pfs --bin pfs)
  PFS=$REPO/target/release/pfs
fi
rm -rf "$ROOT"; mkdir -p "$ROOT"
head -c 16 /dev/urandom > "$ROOT/key"
MNT=$ROOT/mnt
cleanup() { mountpoint -q "$MNT" && { "$PFS" umount "$MNT" || umount -l "$MNT"; }; rm -rf "$ROOT"; }
trap cleanup EXIT

configs=("ttl=1s" "ttl=0")
[[ -n ${PFS_OTHER:-} ]] && configs+=("other")
RES=$ROOT/results.txt; : > "$RES"
for ((r = 1; r <= ROUNDS; r++)); do
  n=${#configs[@]}
  for ((i = 0; i < n; i++)); do
    c=${configs[$(( (i + r - 1) % n ))]}
    bin=$PFS opts=()
    case $c in
      ttl=1s) opts=(--attr-timeout 1 --entry-timeout 1) ;;
      ttl=0) opts=(--attr-timeout 0 --entry-timeout 0) ;;
      other) bin=$PFS_OTHER ;;
    esac
    rm -rf "$ROOT/enc"; mkdir -p "$ROOT/enc" "$MNT"
    "$bin" mount "${opts[@]}" -w "$ROOT/key" "$ROOT/enc" "$MNT"
    load=$(cut -d' ' -f1 /proc/loadavg)
    "$HERE/fsbench.sh" -l "$c" "$MNT" | awk -v c="$c" -v r="$r" -v l="$load" '!/^#/ { print r, c, l, $1, $2 }' >> "$RES"
    "$bin" umount "$MNT"
    echo "round $r $c done (load $load)" >&2
  done
done

echo "# per round: round config load metric value"
cat "$RES"
echo
echo "| metric | $(printf '%s | ' "${configs[@]}")"
echo "|---|$(printf -- '---|%.0s' "${configs[@]}")"
for m in small_create small_ls small_read small_rm rand_read_4k rand_write_4k seq_read_warm; do
  line="| $m |"
  base=$(awk -v m="$m" -v c="ttl=1s" '$4 == m && $2 == c { print $5 }' "$RES" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  for c in "${configs[@]}"; do
    line+=$(awk -v m="$m" -v c="$c" '$4 == m && $2 == c { print $5 }' "$RES" | sort -g | awk -v b="$base" '
      { v[NR] = $1 } END {
        med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf " %s (%s-%s) %.2fx |", med, v[1], v[NR], (b > 0 ? med / b : 0) }')
  done
  echo "$line"
done
echo
echo "load average during the runs: $(awk '{ print $3 }' "$RES" | sort -g | awk '{ v[NR] = $1 } END { print v[1] "-" v[NR] }')"
