#!/usr/bin/env bash
# `pfs run pytorch.manifest pytorchexample.py` against `python3 pytorchexample.py` natively
# (same venv, same plaintext inputs on the owner side), alternating, ROUNDS rounds (issue 10:
# targets <= 1.3x native wall time, <= 150 MiB launcher + FUSE memory beyond the program's).
# Wall time and peak RSS of each command from /usr/bin/time; the launcher's own peak RSS
# (it serves the trusted view and the encrypted mounts in-process) and the trusted-file
# counters from its debug summary (the manifest is rendered with -Dlog_level=debug).
#
#   benches/libos/pytorch-run.sh                 # builds release pfs, 5 rounds
#   PFS=target/debug/pfs ROUNDS=3 benches/libos/pytorch-run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
repo=$(pwd)
if [ -z "${PFS:-}" ]; then
  cargo build -q --release -p pfs --features insecure-sim
  PFS=$(pwd)/target/release/pfs
fi
PFS=$(realpath "$PFS")
export PFS
# The tutorial's steps once (model, encryption, TLS files, manifest), kept for the rounds.
work=$(KEEP=1 SKIP_TRAIN=1 examples/pytorch/run.sh | sed -n 's/^kept //p')
[ -d "$work" ] || { echo "error: examples/pytorch/run.sh did not keep its directory" >&2; exit 1; }
VENV=$(examples/pytorch/setup-venv.sh)
PY=$VENV/bin/python3
cloud=$work/cloud owner=$work/owner
port=$(grep -o 'localhost:[0-9]*' "$cloud/pytorch.manifest" | head -1 | cut -d: -f2)
interp=$(readelf -l "$(realpath "$PY")" | sed -n 's/.*interpreter: \(.*\)]/\1/p')
mr=$(cd "$cloud" && PFS_PYTHON=$PY "$PFS" manifest pytorch.manifest.template pytorch.manifest \
  -Dentrypoint="$PY" -Dvenv_dir="$VENV" -Darch_libdir=/lib/x86_64-linux-gnu -Dinterp="$interp" \
  -Dlog_level=debug -Dservers="localhost:$port" 2>/dev/null | sed -n 's/^simulated measurement (NOT an SGX MRENCLAVE): //p')
printf '[attestation]\ninsecure_allow_simulated = true\n[keys.default]\nfile = "wrap-key"\n[[enclave]]\nname = "bench"\ntee = "simulated"\nmrenclave = "%s"\nfirst_secret = "default"\n' "$mr" >"$owner/policy.toml"
(cd "$owner" && exec "$PFS" keyserver --policy policy.toml --listen "127.0.0.1:$port" \
  --cert tls/server.pem --key tls/server-key.pem) 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 1

echo "== machine: $(nproc) cores, $(uname -r); pfs $PFS; $ROUNDS rounds, page cache warm after round 0"
(cd "$owner/plain" && "$PY" "$repo/examples/pytorch/pytorchexample.py" >/dev/null 2>&1) || true
native=() pfsrun=() nrss=() prss=() lrss=()
for ((r = 0; r <= ROUNDS; r++)); do
  out=$( (cd "$owner/plain" && /usr/bin/time -f "TIME %e %M" "$PY" "$repo/examples/pytorch/pytorchexample.py") 2>&1 >/dev/null | grep '^TIME')
  n_t=$(echo "$out" | cut -d' ' -f2) n_m=$(echo "$out" | cut -d' ' -f3)
  log=$( (cd "$cloud" && /usr/bin/time -f "TIME %e %M" "$PFS" run pytorch.manifest pytorchexample.py) 2>&1 >/dev/null)
  p_t=$(echo "$log" | grep '^TIME' | cut -d' ' -f2) p_m=$(echo "$log" | grep '^TIME' | cut -d' ' -f3)
  l_m=$(echo "$log" | sed -n 's/.*launcher peak RSS \([0-9]*\) kB.*/\1/p' | tail -1)
  summary=$(echo "$log" | grep -o 'trusted files: .*' | tail -1)
  [ "$r" -eq 0 ] && { echo "warm-up: native ${n_t}s, pfs run ${p_t}s; $summary"; continue; }
  echo "round $r: native ${n_t}s ${n_m} KiB | pfs run ${p_t}s ${p_m} KiB, launcher peak ${l_m:-?} kB"
  native+=("$n_t") pfsrun+=("$p_t") nrss+=("$n_m") prss+=("$p_m") lrss+=("${l_m:-0}")
done
echo "last summary: $summary"
python3 - "${native[*]}" "${pfsrun[*]}" "${nrss[*]}" "${lrss[*]}" <<'PY'
import statistics as st, sys
n, p, nr, lr = ([float(x) for x in a.split()] for a in sys.argv[1:])
print(f"native   wall median {st.median(n):.2f}s (min {min(n):.2f}, max {max(n):.2f}); peak RSS median {st.median(nr)/1024:.0f} MiB")
print(f"pfs run  wall median {st.median(p):.2f}s (min {min(p):.2f}, max {max(p):.2f}); ratio of medians {st.median(p)/st.median(n):.2f}x")
print(f"launcher (trusted view + encrypted mounts) peak RSS median {st.median(lr)/1024:.0f} MiB, max {max(lr)/1024:.0f} MiB")
PY
