#!/usr/bin/env bash
# `import torch` under `pfs run` against the same interpreter natively, alternating rounds.
#
#   benches/libos/torch-import.sh PFS MANIFEST VENV_PYTHON [ROUNDS]
#
# MANIFEST runs VENV_PYTHON with argv that prints "<torch version> <import seconds>" (see
# docs/LIBOS.md, "PyTorch under pfs run") and has loader.log_level = "debug", so the
# launcher's summary line (files verified, bytes hashed, launcher peak RSS) is printed.
# Prints one line per run (wall s, peak RSS of the largest process in KiB from
# /usr/bin/time -v, import s) and the medians with min..max.
set -euo pipefail
pfs=$1 manifest=$2 python=$3 rounds=${4:-5}
code='import time; t=time.time(); import torch; print(torch.__version__, round(time.time()-t, 2))'
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # kind, command...
  local kind=$1; shift
  /usr/bin/time -v "$@" >"$out/stdout" 2>"$out/stderr"
  local wall rss imp
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {split($2, a, ":"); print a[1]*60 + a[2]}' "$out/stderr")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$out/stderr")
  imp=$(awk '{print $2}' "$out/stdout")
  echo "$kind wall=$wall rss_kib=$rss import=$imp"
  echo "$kind $wall $rss $imp" >>"$out/all"
  grep -h "trusted files:" "$out/stderr" | sed 's/^/    /' || true
}
for i in $(seq "$rounds"); do
  run native "$python" -c "$code"
  run pfs "$pfs" run "$manifest"
done
for kind in native pfs; do
  for col in 2 3 4; do
    awk -v k=$kind -v c=$col '$1 == k {print $c}' "$out/all" | sort -g |
      awk -v k=$kind -v c=$col 'BEGIN {split("x wall_s rss_kib import_s", n)} {v[NR]=$1}
        END {printf "%s %s median %s (min %s max %s)\n", k, n[c], v[int((NR+1)/2)], v[1], v[NR]}'
  done
done
