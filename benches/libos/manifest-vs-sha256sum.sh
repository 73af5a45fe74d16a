#!/usr/bin/env bash
# `pfs manifest` trusted-file hashing against `find TREE -type f -print0 | xargs -0 -P2
# sha256sum` on the same trees, interleaved in one run (issue 10, item 3). Three commands per
# round, in turn:
#   sha256sum   the baseline above;
#   cold        `pfs manifest --no-hash-cache` (every file read and hashed);
#   re-render   `pfs manifest` with a cache filled by an earlier render (nothing changed).
# With PAGE_CACHE=cold (root only) the page cache is dropped before every command, so every
# byte and inode comes from disk; PAGE_CACHE=warm keeps it. Prints per-command median,
# min and max of the rounds and the ratios to the baseline. Figures: docs/LIBOS.md.
#
#   benches/libos/manifest-vs-sha256sum.sh                       # the torch venv, warm, 5 rounds
#   PAGE_CACHE=cold ROUNDS=3 benches/libos/manifest-vs-sha256sum.sh
#   TREES="/usr/lib/python3.11 $HOME/.cache/pfs/torch-venv" benches/libos/manifest-vs-sha256sum.sh
#   SYNTH_FILES=137000 benches/libos/manifest-vs-sha256sum.sh     # + a generated tree of small files
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-5}
PAGE_CACHE=${PAGE_CACHE:-warm}
TREES=${TREES:-${PFS_TORCH_VENV:-$HOME/.cache/pfs/torch-venv}}
WORK=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/pfs-manifest-bench.XXXXXX")}
mkdir -p "$WORK"
if [ "$PAGE_CACHE" = cold ] && [ "$(id -u)" -ne 0 ]; then
  echo "error: PAGE_CACHE=cold drops the page cache and needs root" >&2
  exit 2
fi

if [ -z "${PFS:-}" ]; then
  cargo build -q --release -p pfs
  PFS=$(pwd)/target/release/pfs
fi

if [ -n "${SYNTH_FILES:-}" ]; then
  # Small files in a two-level tree, sizes 0..8 KiB derived from the index: many files, as a
  # CUDA torch venv has, without downloading one.
  synth=$WORK/synth
  if [ ! -d "$synth" ]; then
    python3 - "$synth" "$SYNTH_FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"{i % 97:02d}", f"{i % 1009:04d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.py"), "wb") as f:
        f.write((f"# file {i}\n".encode() * 800)[: (i * 7919) % 8192])
PY
  fi
  TREES="$TREES $synth"
fi

template=$WORK/bench.manifest.template
{
  echo 'libos.entrypoint = "/bin/true"'
  echo 'sgx.trusted_files = ['
  for t in $TREES; do echo "  \"file:$t/\","; done
  echo ']'
} >"$template"
export XDG_CACHE_HOME=$WORK/xdg

files=$(find $TREES -type f | wc -l)
bytes=$(du -scb $TREES | tail -1 | cut -f1)
echo "== machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== pfs: $("$PFS" --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "== trees: $TREES ($files regular files, $((bytes >> 20)) MiB); page cache $PAGE_CACHE; $ROUNDS rounds"

drop() { if [ "$PAGE_CACHE" = cold ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }
now() { date +%s.%N; }
declare -A times=()
timed() { # name, command...
  local name=$1 t0 t1
  shift
  drop
  t0=$(now)
  "$@" >/dev/null 2>"$WORK/stderr" || { cat "$WORK/stderr" >&2; exit 1; }
  t1=$(now)
  times[$name]+="$(echo "$t1 - $t0" | bc -l) "
}
baseline() { find $TREES -type f -print0 | xargs -0 -P2 sha256sum >/dev/null; }

# Fill the cache once (and warm the page cache for PAGE_CACHE=warm).
"$PFS" manifest "$template" "$WORK/out.manifest"
for ((r = 1; r <= ROUNDS; r++)); do
  timed sha256sum baseline
  timed cold "$PFS" manifest --no-hash-cache "$template" "$WORK/out.manifest"
  timed re-render "$PFS" manifest "$template" "$WORK/out.manifest"
done
tail -1 "$WORK/stderr" >&2

python3 - "${times[sha256sum]}" "${times[cold]}" "${times[re-render]}" <<'PY'
import statistics, sys
names = ["sha256sum -P2", "pfs manifest (no cache)", "pfs manifest re-render"]
runs = [[float(x) for x in a.split()] for a in sys.argv[1:]]
base = statistics.median(runs[0])
print(f"{'command':28} {'median s':>9} {'min':>7} {'max':>7} {'vs sha256sum':>13}")
for n, r in zip(names, runs):
    m = statistics.median(r)
    print(f"{n:28} {m:9.2f} {min(r):7.2f} {max(r):7.2f} {m / base:12.2f}x")
PY
[ -z "${WORK_DIR:-}" ] && rm -rf "$WORK"
