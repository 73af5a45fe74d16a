"""Privacy-preserving inference with numpy: an ordinary program, unchanged for the TEE.

It loads the model with np.load (an .npz, i.e. a zip archive read with seeks), memory-maps
the input batch (np.load(mmap_mode="r")), and writes its predictions. Under `pfs run`, /data
and /output are encrypted mounts: the host files are Gramine protected files and the key
comes from the data owner's key server after attestation.
"""

import numpy as np

model = np.load("/data/weights.npz")
W, b = model["W"], model["b"]
classes = [str(c) for c in model["classes"]]
x = np.load("/data/input.npy", mmap_mode="r")

z = np.asarray(x) @ W.T + b
z -= z.max(axis=1, keepdims=True)
p = np.exp(z)
p /= p.sum(axis=1, keepdims=True)
pred = p.argmax(axis=1)

np.save("/output/probabilities.npy", p)
with open("/output/result.txt", "w") as f:
    for i, (k, row) in enumerate(zip(pred, p)):
        f.write("input %d (%.3f, %.3f): %s (p=%.3f)\n" % (i, x[i, 0], x[i, 1], classes[k], row[k]))
print("infer.py: classified %d inputs; wrote /output/result.txt and /output/probabilities.npy" % len(pred))
