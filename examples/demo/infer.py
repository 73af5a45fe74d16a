"""Inference with a tiny softmax classifier, Python standard library only.

This is an ordinary, unmodified program: it reads its model and inputs from /data and writes
its result to /output. Under `pfs run` those directories are encrypted mounts: the files on
the host are Gramine protected files, and this program never sees a key or a ciphertext.
"""

import csv
import json
import math
import sys

MODEL = "/data/model.json"
INPUT = "/data/input.csv"
RESULT = "/output/result.txt"


def softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def main():
    with open(MODEL) as f:
        model = json.load(f)
    classes = model["classes"]
    weights = model["weights"]  # one row of feature weights per class
    bias = model["bias"]
    with open(INPUT, newline="") as f:
        rows = [[float(v) for v in row] for row in csv.reader(f) if row and not row[0].startswith("x")]
    lines = []
    for i, x in enumerate(rows):
        z = [sum(w * v for w, v in zip(wc, x)) + b for wc, b in zip(weights, bias)]
        p = softmax(z)
        k = max(range(len(p)), key=p.__getitem__)
        lines.append("input %d (%.2f, %.2f): %s (p=%.3f)" % (i, x[0], x[1], classes[k], p[k]))
    with open(RESULT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("infer.py: classified %d inputs with a %d-class model; wrote %s" % (len(rows), len(classes), RESULT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
