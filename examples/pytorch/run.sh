#!/usr/bin/env bash
# The README's steps, in order, in a fresh directory: the data owner's model, image and class
# list, encrypted with `pfs encrypt`; the key server; `pfs manifest`; `pfs run` of the
# unmodified pytorchexample.py; the decrypted result compared with a native run. Then the
# training use case: an encrypted data set of many small images, two epochs with encrypted
# checkpoints, a killed run resumed from its last checkpoint.
#
#   examples/pytorch/run.sh                  # work in a temporary directory, removed at the end
#   KEEP=1 examples/pytorch/run.sh           # keep it
#   PFS=target/debug/pfs SKIP_TRAIN=1 examples/pytorch/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
if [ -z "${PFS:-}" ]; then
  (cd "$repo" && cargo build --release -q -p pfs --features insecure-sim)
  PFS=$repo/target/release/pfs
fi
PFS=$(realpath "$PFS")
VENV=$("$here/setup-venv.sh")
PY=$VENV/bin/python3
work=$(mktemp -d "${TMPDIR:-/var/tmp}/pfs-pytorch.XXXXXX")
server=
cleanup() {
  local rc=$?
  if [ -n "$server" ]; then kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; fi
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
owner=$work/owner cloud=$work/cloud
mkdir -p "$owner/plain" "$cloud"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
arch_libdir=/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
[ -d "$arch_libdir" ] || arch_libdir=/lib/x86_64-linux-gnu
# The ELF interpreter of the venv's python (see the templates' note on PT_INTERP).
interp=$(readelf -l "$(realpath "$PY")" | sed -n 's/.*interpreter: \(.*\)]/\1/p')

echo "== 1. the model, the image and the classes (owner)"
"$PY" "$here/make_model.py" "$owner/plain"

echo "== 2. wrap key; encrypt each file, bound to its name in the cloud directory"
"$PFS" keygen -q -o "$owner/wrap-key"
for f in alexnet-pretrained.pt input.jpg classes.txt; do
  (cd "$cloud" && "$PFS" encrypt -q -w "$owner/wrap-key" -i "$owner/plain/$f" -o "$f")
done

echo "== 3. the key server's TLS files"
"$PFS" keyserver init-tls "$owner/tls" >/dev/null
cp "$owner/tls/ca.pem" "$cloud/ca.crt"

echo "== 4. the manifest (cloud)"
cp "$here/pytorchexample.py" "$here/pytorch.manifest.template" "$cloud/"
render() { # template output
  (cd "$cloud" && PFS_PYTHON=$PY "$PFS" manifest "$1" "$2" -Dentrypoint="$PY" -Dvenv_dir="$VENV" \
    -Darch_libdir="$arch_libdir" -Dinterp="$interp" -Dservers="localhost:$port") | sed -n 's/^simulated measurement (NOT an SGX MRENCLAVE): //p'
}
mr=$(render pytorch.manifest.template pytorch.manifest)
echo "simulated measurement: $mr"

echo "== 5. the key server (owner)"
policy() { # name mrenclave...
  local name=$1
  shift
  printf '[attestation]\ninsecure_allow_simulated = true\n[keys.default]\nfile = "wrap-key"\n'
  for m in "$@"; do
    printf '[[enclave]]\nname = "%s"\ntee = "simulated"\nmrenclave = "%s"\nfirst_secret = "default"\n' "$name-${m:0:8}" "$m"
  done
}
start_server() {
  (cd "$owner" && exec "$PFS" keyserver --policy policy.toml --listen "127.0.0.1:$port" \
    --cert tls/server.pem --key tls/server-key.pem) 2>>"$owner/keyserver.log" &
  server=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1; done
  echo "key server did not start" >&2
  exit 1
}

if [ -z "${SKIP_TRAIN:-}" ]; then
  echo "== (training) the data set, encrypted as a directory; the training manifest"
  "$PY" "$here/make_dataset.py" "$owner/plain/dataset" "${DATASET_SIZE:-10000}" >/dev/null
  (cd "$cloud" && "$PFS" encrypt -q -w "$owner/wrap-key" -i "$owner/plain/dataset" -o dataset)
  mkdir -p "$cloud/checkpoints"
  cp "$here/train.py" "$here/train.manifest.template" "$cloud/"
  mr_train=$(render train.manifest.template train.manifest)
  policy pytorch "$mr" "$mr_train" >"$owner/policy.toml"
else
  policy pytorch "$mr" >"$owner/policy.toml"
fi
start_server

echo "== 6. pfs run pytorch.manifest pytorchexample.py (cloud)"
(cd "$cloud" && "$PFS" run pytorch.manifest pytorchexample.py)

echo "== 7. decrypt the result (owner) and compare with a native run"
"$PFS" decrypt -q -w "$owner/wrap-key" -i "$cloud/result.txt" -o "$owner/result.txt" --expect-path result.txt
(cd "$owner/plain" && "$PY" "$here/pytorchexample.py" >/dev/null)
cmp "$owner/result.txt" "$owner/plain/result.txt" && echo "result.txt equals the native run's: $(cat "$owner/result.txt")"

if [ -z "${SKIP_TRAIN:-}" ]; then
  echo "== 8. training: epoch 1, killed during epoch 2, resumed"
  (cd "$cloud" && "$PFS" run train.manifest train.py --epochs 1)
  (cd "$cloud" && exec "$PFS" run train.manifest train.py --epochs 3) &
  run=$!
  sleep "${KILL_AFTER:-5}"
  kill -KILL "$run" 2>/dev/null || true
  wait "$run" 2>/dev/null || true
  (cd "$cloud" && "$PFS" run train.manifest train.py --epochs 2)
  "$PFS" decrypt -q -w "$owner/wrap-key" -i "$cloud/checkpoints/metrics.txt" -o "$owner/metrics.txt" \
    --expect-path checkpoints/metrics.txt
  mkdir -p "$owner/native-ckpt"
  "$PY" "$here/train.py" --data "$owner/plain/dataset" --checkpoints "$owner/native-ckpt" --epochs 2 >/dev/null
  cmp "$owner/metrics.txt" "$owner/native-ckpt/metrics.txt" && echo "training metrics equal the native run's:" && cat "$owner/metrics.txt"
fi
grep -c "sent first secret" "$owner/keyserver.log" | sed 's/^/key releases logged by the key server: /'
