#!/usr/bin/env bash
# hardlink-tools.sh - what copying tools do with a pfs mount's refusal of regular-file hard links.
#
# Usage: tests/posix/hardlink-tools.sh [PFS_BINARY]     (as root; needs rsync, tar, python3, git)
#
# Builds a tree with two hard-linked regular files (a, b), two more in a subdirectory (d/c,
# d/c2), a hard-linked FIFO (f, f2) and a hard-linked symlink (s, s2), mounts a fresh pfs mount
# and copies the tree onto it with `cp -a`, `rsync -aH`, `tar -c | tar -x` and Python's
# `shutil.copytree(symlinks=True)`; then commits to and clones a git repository inside the
# mount. Prints each tool's messages and exit status and, per copy, every name with its type,
# link count and content (MISSING when the tool left it out). The evidence behind the errno
# choice in docs/FUSE.md ("Hard links").
set -uo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
PFS=${1:-$HERE/../../target/debug/pfs}
W=$(mktemp -d /var/tmp/pfs-hardlink-tools.XXXXXX)
cleanup() { mountpoint -q "$W/plain" && "$PFS" umount "$W/plain"; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/src/d" "$W/enc" "$W/plain"
(cd "$W/src" && printf 'hello\n' > a && ln a b && mkfifo f && ln f f2 && ln -s a s && ln s s2 \
  && printf 'x\n' > d/c && ln d/c d/c2)
head -c 16 /dev/urandom > "$W/key"
"$PFS" mount -w "$W/key" "$W/enc" "$W/plain" 2> "$W/daemon.log" || { cat "$W/daemon.log"; exit 1; }
cd "$W"
for t in cp rsync tar shutil; do mkdir "plain/$t"; done
echo "== cp -a";     cp -a src/. plain/cp/; echo "exit $?"
echo "== rsync -aH"; rsync -aH src/ plain/rsync/; echo "exit $?"
echo "== tar";       (tar -C src -cf - . | tar -C plain/tar -xf -); echo "exit $?"
echo "== shutil.copytree"
python3 -c "import shutil; shutil.copytree('src', 'plain/shutil', symlinks=True, dirs_exist_ok=True)" 2>&1 | tail -n 1
echo "exit ${PIPESTATUS[0]}"
for t in cp rsync tar shutil; do
  printf -- '-- %s:' "$t"
  for n in a b d/c d/c2 f f2 s s2; do
    p=plain/$t/$n
    if [[ -e $p || -L $p ]]; then
      printf ' %s=%s' "$n" "$(stat -c '%F,nlink=%h' "$p" | tr ' ' '_')"
      [[ -f $p && ! -L $p ]] && printf ',"%s"' "$(tr -d '\n' < "$p")"
    else
      printf ' %s=MISSING' "$n"
    fi
  done
  echo
done
echo "== git commit and clone inside the mount"
(cd plain && git init -q repo && cd repo && echo hi > f && git add f \
  && git -c user.email=t@example.org -c user.name=t commit -qm m && echo "commit: exit 0")
(cd plain && git clone -q repo clone && echo "clone: exit 0, $(git -C clone log --oneline | wc -l) commit(s)")
echo "== versions: $(cp --version | head -n 1); $(rsync --version | head -n 1); $(tar --version | head -n 1); $(python3 --version); $(git --version)"
