#!/usr/bin/env bash
# Times `pfs encrypt` and `pfs decrypt` of one large file against `cp` of the same file,
# side by side in one run, and prints wall times and ratios (issue 2 acceptance: at most
# 2x cp, aim 1.5x). Results go into docs/PERFORMANCE.md, "CLI encrypt/decrypt vs cp".
#
#   benches/cli/encrypt-vs-cp.sh                 # 256 MiB, 5 rounds, cold and warm cache
#   SIZE_MIB=1024 ROUNDS=3 benches/cli/encrypt-vs-cp.sh
#   CACHE=warm benches/cli/encrypt-vs-cp.sh      # only page-cache-warm rounds
#   WORK_DIR=/mnt/disk benches/cli/encrypt-vs-cp.sh
#
# Cold rounds drop the page cache before every command (needs root; skipped otherwise), so
# each command reads its input from disk. Outputs are removed before every command and
# nobody fsyncs (cp does not either). Uses hyperfine when present (installs it with apt-get
# when run as root), else a bash loop; both report the mean and the median of the rounds,
# and hyperfine also the CPU time (user + system), which shows less noise on a busy machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZE_MIB=${SIZE_MIB:-256}
ROUNDS=${ROUNDS:-5}
CACHE=${CACHE:-both} # cold | warm | both
WORK=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/pfs-cp-bench.XXXXXX")}
mkdir -p "$WORK"
is_root=$([ "$(id -u)" -eq 0 ] && echo 1 || echo 0)

cargo build --release -q -p pfs
PFS=$(pwd)/target/release/pfs

if ! command -v hyperfine >/dev/null 2>&1 && [ "$is_root" = 1 ] && [ -z "${NO_HYPERFINE:-}" ]; then
  (apt-get install -y -qq hyperfine >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq hyperfine; }) \
    >/dev/null 2>&1 || echo "note: could not install hyperfine; using the bash timing loop" >&2
fi

echo "== setup: ${SIZE_MIB} MiB random file in $WORK"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/plain"
rm -f "$WORK/k.key"
"$PFS" keygen -q -o "$WORK/k.key"
"$PFS" encrypt -q -w "$WORK/k.key" -i "$WORK/plain" -o "$WORK/enc.pf"
"$PFS" decrypt -q -w "$WORK/k.key" -i "$WORK/enc.pf" -o "$WORK/check.out"
cmp "$WORK/plain" "$WORK/check.out" && rm -f "$WORK/check.out"

CMD_CP="cp $WORK/plain $WORK/cp.out"
CMD_ENC="$PFS encrypt -q -w $WORK/k.key -i $WORK/plain -o $WORK/enc.out"
CMD_DEC="$PFS decrypt -q -w $WORK/k.key -i $WORK/enc.pf -o $WORK/dec.out"
CLEAN="rm -f $WORK/cp.out $WORK/enc.out $WORK/dec.out"
DROP="sync; echo 3 > /proc/sys/vm/drop_caches"

echo "== machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== pfs: $("$PFS" --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# Prints "name mean median cpu" lines (seconds; cpu = user + system) from a hyperfine JSON export.
summarize_json() {
  python3 - "$1" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(r["command"], r["mean"], r["median"], r["user"] + r["system"])
EOF
}

# Runs one mode (cold|warm); prints "name mean median cpu" for cp, encrypt, decrypt
# (cpu is "nan" from the bash loop, which does not measure it).
run_mode() {
  local mode=$1 prepare=$CLEAN
  [ "$mode" = cold ] && prepare="$CLEAN; $DROP"
  if command -v hyperfine >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
    local json="$WORK/hyperfine-$mode.json"
    hyperfine --style basic --runs "$ROUNDS" --warmup 1 --prepare "$prepare" --export-json "$json" \
      -n cp "$CMD_CP" -n encrypt "$CMD_ENC" -n decrypt "$CMD_DEC" >&2
    summarize_json "$json"
  else
    local name cmd t0 t1
    declare -A times=()
    for ((r = 0; r < ROUNDS; r++)); do
      for name in cp encrypt decrypt; do
        case $name in cp) cmd=$CMD_CP ;; encrypt) cmd=$CMD_ENC ;; decrypt) cmd=$CMD_DEC ;; esac
        bash -c "$prepare"
        t0=$(date +%s.%N)
        bash -c "$cmd"
        t1=$(date +%s.%N)
        times[$name]+="$(echo "$t1 - $t0" | bc -l) "
      done
    done
    for name in cp encrypt decrypt; do
      echo "$name $(echo "${times[$name]}" | tr ' ' '\n' | grep . | sort -g |
        awk '{a[NR]=$1; s+=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print s/NR, m, "nan"}')"
    done
  fi
}

modes=()
case $CACHE in
  cold | both) if [ "$is_root" = 1 ]; then modes+=(cold); else echo "note: not root, no cold-cache rounds" >&2; fi ;;
esac
case $CACHE in warm | both) modes+=(warm) ;; esac

for mode in "${modes[@]}"; do
  echo
  echo "== $mode page cache, $ROUNDS rounds, ${SIZE_MIB} MiB"
  results=$(run_mode "$mode")
  cp_median=$(awk '$1 == "cp" {print $3}' <<<"$results")
  printf '%-8s %10s %10s %10s %14s %12s\n' command "mean (s)" "median (s)" "MiB/s" "median / cp" "CPU (s)"
  while read -r name mean median cpu; do
    printf '%-8s %10.3f %10.3f %10.0f %13.2fx %12.3f\n' "$name" "$mean" "$median" \
      "$(echo "$SIZE_MIB / $median" | bc -l)" "$(echo "$median / $cp_median" | bc -l)" "$cpu"
  done <<<"$results"
done

if [ -z "${WORK_DIR:-}" ]; then rm -rf "$WORK"; fi
