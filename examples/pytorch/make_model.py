"""The data owner's inputs for pytorchexample.py: a model, an image and a class list.

    python3 make_model.py OUT_DIR

writes OUT_DIR/alexnet-pretrained.pt (a torchvision AlexNet with random weights, seeded, saved
whole with torch.save, so loading it needs weights_only=False, as the tutorial's model does),
OUT_DIR/input.jpg (a generated 256x256 picture) and OUT_DIR/classes.txt (1000 class names).
Nothing is downloaded. The same seed gives the same files.
"""

import math
import os
import sys

import torch
import torchvision
from PIL import Image

out = sys.argv[1] if len(sys.argv) > 1 else "."
os.makedirs(out, exist_ok=True)

torch.manual_seed(20261203)
model = torchvision.models.alexnet(weights=None)
model.eval()
torch.save(model, os.path.join(out, "alexnet-pretrained.pt"))

# A picture with some structure (rings and a gradient), so that the model sees varied input.
size = 256
img = Image.new("RGB", (size, size))
px = img.load()
for y in range(size):
    for x in range(size):
        r = math.hypot(x - 100, y - 140)
        px[x, y] = (int(127 + 127 * math.sin(r / 9.0)), (x * 255) // size, (y * 3) % 256)
img.save(os.path.join(out, "input.jpg"), quality=90)

with open(os.path.join(out, "classes.txt"), "w") as f:
    for i in range(1000):
        f.write(f"{i}, class-{i:03d}\n")
print(f"make_model.py: wrote alexnet-pretrained.pt, input.jpg and classes.txt to {out}")
