#!/usr/bin/env python3
"""An independent reader of Gramine protected files, written from spec/pf-format.md alone.

It shares no code with pfs-core, so files that pfs writes and this script reads (and the
reverse, for Gramine's vectors) cross-check the format rather than one implementation
against itself. Usage: pf_reader.py KEYFILE PFFILE [EXPECTED_PATH] > plaintext
Exit status 0 = decrypted and every node authenticated; 1 = format or integrity error.
"""
import struct
import sys

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NODE = 4096
INLINE = 3072
PATH_FIELD = 772
ENC_PART = PATH_FIELD + 8 + 16 + 16 + INLINE  # 3884


def gcm_open(key: bytes, data: bytes, tag: bytes, what: str) -> bytes:
    try:
        return AESGCM(key).decrypt(b"\0" * 12, data + tag, None)
    except Exception:
        raise SystemExit(f"pf_reader: {what}: authentication failed")


def metadata_key(kdk: bytes, nonce: bytes) -> bytes:
    label = b"SGX-PROTECTED-FS-METADATA-KEY".ljust(64, b"\0")
    kdf_input = struct.pack("<I", 1) + label + nonce + struct.pack("<I", 128)
    assert len(kdf_input) == 104
    c = cmac.CMAC(algorithms.AES(kdk))
    c.update(kdf_input)
    return c.finalize()


def main() -> None:
    kdk = open(sys.argv[1], "rb").read()
    host = open(sys.argv[2], "rb").read()
    expected_path = sys.argv[3].encode() if len(sys.argv) > 3 else None
    if len(kdk) != 16:
        raise SystemExit("pf_reader: key must be 16 bytes")
    if len(host) == 0 or len(host) % NODE:
        raise SystemExit("pf_reader: host size is not a positive multiple of 4096")
    node0 = host[:NODE]
    if node0[:8] != b"GRAFS_PF":
        raise SystemExit("pf_reader: bad file id")
    major = node0[8]
    if major not in (1, 2):
        raise SystemExit(f"pf_reader: bad major version {major}")
    nonce, tag = node0[10:42], node0[42:58]
    start = 59 if major == 2 else 58
    part = gcm_open(metadata_key(kdk, nonce), node0[start:start + ENC_PART], tag, "metadata")
    path = part[:PATH_FIELD].split(b"\0", 1)[0]
    if expected_path is not None and path != expected_path:
        raise SystemExit(f"pf_reader: embedded path {path!r} != {expected_path!r}")
    size = struct.unpack("<Q", part[PATH_FIELD:PATH_FIELD + 8])[0]
    root_key = part[PATH_FIELD + 8:PATH_FIELD + 24]
    root_tag = part[PATH_FIELD + 24:PATH_FIELD + 40]
    inline = part[PATH_FIELD + 40:]
    out = bytearray(inline[:min(size, INLINE)])
    if size > INLINE:
        def node(p: int) -> bytes:
            chunk = host[p * NODE:(p + 1) * NODE]
            if len(chunk) != NODE:
                raise SystemExit(f"pf_reader: host node {p} missing")
            return chunk

        mht_plain = {0: gcm_open(root_key, node(1), root_tag, "root MHT")}

        def mht(m: int) -> bytes:
            if m not in mht_plain:
                parent = (m - 1) // 32
                entry = 3072 + 32 * ((m - 1) % 32)
                p = mht(parent)
                mht_plain[m] = gcm_open(p[entry:entry + 16], node(1 + 97 * m),
                                        p[entry + 16:entry + 32], f"MHT node {m}")
            return mht_plain[m]

        data_nodes = (size - INLINE + NODE - 1) // NODE
        for d in range(data_nodes):
            m = mht(d // 96)
            entry = 32 * (d % 96)
            plain = gcm_open(m[entry:entry + 16], node(d + 2 + d // 96), m[entry + 16:entry + 32],
                             f"data node {d}")
            out += plain
        del out[size:]
    sys.stdout.buffer.write(bytes(out))


if __name__ == "__main__":
    main()
