"""A private training set for train.py: many small labelled images.

    python3 make_dataset.py OUT_DIR [COUNT]

writes COUNT (default 10000) 16x16 PNG images OUT_DIR/img/NNNNN.png and OUT_DIR/labels.txt
("NNNNN.png LABEL" per line). Class k (0..3) is a bright square in quadrant k over noise, so a
small network can learn it in a few epochs. Seeded: the same arguments give the same files.
"""

import os
import random
import sys

from PIL import Image

out = sys.argv[1] if len(sys.argv) > 1 else "dataset"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
rng = random.Random(42)
os.makedirs(os.path.join(out, "img"), exist_ok=True)
with open(os.path.join(out, "labels.txt"), "w") as labels:
    for i in range(count):
        label = rng.randrange(4)
        img = Image.new("L", (16, 16))
        px = img.load()
        for y in range(16):
            for x in range(16):
                px[x, y] = rng.randrange(96)
        ox, oy = (label % 2) * 8, (label // 2) * 8
        for y in range(oy + 2, oy + 6):
            for x in range(ox + 2, ox + 6):
                px[x, y] = 160 + rng.randrange(96)
        name = f"{i:05d}.png"
        img.save(os.path.join(out, "img", name))
        labels.write(f"{name} {label}\n")
print(f"make_dataset.py: wrote {count} images and labels.txt to {out}")
