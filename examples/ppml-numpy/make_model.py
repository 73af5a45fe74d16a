"""Data owner's side: train a small softmax classifier with numpy and write the model and an
input batch as numpy files (run this on the owner's trusted machine, then encrypt the files
with `pfs encrypt` and delete the plaintext).

    python3 make_model.py OUTDIR      # writes OUTDIR/weights.npz and OUTDIR/input.npy
"""

import os
import sys

import numpy as np

CLASSES = np.array(["red", "green", "blue"])
CENTRES = np.array([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0]])


def main(out):
    rng = np.random.default_rng(20240521)
    x = np.concatenate([c + 0.8 * rng.standard_normal((200, 2)) for c in CENTRES])
    y = np.repeat(np.arange(3), 200)
    w = np.zeros((3, 2))
    b = np.zeros(3)
    onehot = np.eye(3)[y]
    for _ in range(500):
        z = x @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(x)
        w -= 0.5 * g.T @ x
        b -= 0.5 * g.sum(axis=0)
    accuracy = float(((x @ w.T + b).argmax(axis=1) == y).mean())
    # The batch to classify: 512 points (8 KiB of float64, so the memory map spans nodes).
    batch = rng.uniform(-4.0, 4.0, size=(512, 2))
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, "weights.npz"), W=w, b=b, classes=CLASSES)
    np.save(os.path.join(out, "input.npy"), batch)
    print("make_model.py: training accuracy %.3f; wrote weights.npz and input.npy to %s" % (accuracy, out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
