#!/usr/bin/env bash
# The main job on built-in defaults: make a key, encrypt a generated 10 MiB file into a
# Gramine protected file, inspect and check it, decrypt it and compare with the original.
#
#   bash examples/quickstart.sh            # works in a temporary directory, then removes it
#   KEEP=1 bash examples/quickstart.sh     # keep the directory to look at the files
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p pfs
pfs=$(pwd)/target/release/pfs
work=$(mktemp -d "${TMPDIR:-/tmp}/pfs-quickstart.XXXXXX")
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
cd "$work"

echo "== working in $work"
head -c $((10 << 20)) /dev/urandom >model.bin

echo "== pfs keygen -o model.key"
"$pfs" keygen -o model.key

echo "== pfs encrypt -w model.key -i model.bin -o enc/model.bin"
"$pfs" encrypt -w model.key -i model.bin -o enc/model.bin

echo "== pfs info -w model.key enc/model.bin"
"$pfs" info -w model.key enc/model.bin

echo "== pfs check -w model.key enc/model.bin"
"$pfs" check -w model.key enc/model.bin

echo "== pfs decrypt -w model.key -i enc/model.bin -o model.out -V"
"$pfs" decrypt -w model.key -i enc/model.bin -o model.out -V

cmp model.bin model.out
echo "== ok: the decrypted file is identical to the original"
