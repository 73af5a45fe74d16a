"""Training on private data: an ordinary PyTorch program, unchanged for the TEE.

    python3 train.py [--data DIR] [--checkpoints DIR] [--epochs N]

Reads every image listed in DIR/labels.txt (DIR defaults to /dataset, an encrypted directory
mount under `pfs run`), trains a small CNN, and after every epoch writes DIR2/checkpoint.pt
(DIR2 defaults to /checkpoints, encrypted too): model, optimiser and epoch. It writes the new
checkpoint beside the old one and renames it over, so a run killed at any moment leaves the
last complete checkpoint; started again, it resumes from it. metrics.txt (one line per epoch)
is rewritten from the checkpoint's history. Every epoch shuffles with a generator seeded by
the epoch number, so a resumed run computes exactly what an uninterrupted one does.
"""

import argparse
import os

import numpy as np
import torch
from PIL import Image

parser = argparse.ArgumentParser()
parser.add_argument("--data", default="/dataset")
parser.add_argument("--checkpoints", default="/checkpoints")
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--batch", type=int, default=100)
args = parser.parse_args()
torch.set_num_threads(1)
torch.manual_seed(7)

# The directory listing and the label file must agree: both come from the encrypted mount.
listed = sorted(os.listdir(os.path.join(args.data, "img")))
with open(os.path.join(args.data, "labels.txt")) as f:
    pairs = [line.split() for line in f if line.strip()]
if sorted(name for name, _ in pairs) != listed:
    raise SystemExit(f"train.py: labels.txt and img/ disagree ({len(pairs)} labels, {len(listed)} files)")
images = np.stack(
    [np.asarray(Image.open(os.path.join(args.data, "img", name)), dtype=np.float32) / 255.0 for name, _ in pairs]
)
x_all = torch.from_numpy(images).unsqueeze(1)
y_all = torch.tensor([int(label) for _, label in pairs])

model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 3, padding=1),
    torch.nn.ReLU(),
    torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(8, 16, 3, padding=1),
    torch.nn.ReLU(),
    torch.nn.MaxPool2d(2),
    torch.nn.Flatten(),
    torch.nn.Linear(16 * 4 * 4, 4),
)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)

ckpt_path = os.path.join(args.checkpoints, "checkpoint.pt")


def write_metrics(history):
    """metrics.txt from the checkpoint's history: complete whenever the run is killed."""
    path = os.path.join(args.checkpoints, "metrics.txt")
    with open(path + ".tmp", "w") as f:
        f.writelines(line + "\n" for line in history)
    os.replace(path + ".tmp", path)


start, history = 0, []
if os.path.exists(ckpt_path):
    ckpt = torch.load(ckpt_path, weights_only=True)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    start, history = ckpt["epoch"], ckpt["history"]
    print(f"train.py: resuming after epoch {start} from {ckpt_path}", flush=True)

for epoch in range(start, args.epochs):
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(1000 + epoch))
    total, correct = 0.0, 0
    model.train()
    for i in range(0, len(order), args.batch):
        idx = order[i : i + args.batch]
        out = model(x_all[idx])
        loss = torch.nn.functional.cross_entropy(out, y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        correct += (out.argmax(1) == y_all[idx]).sum().item()
    line = f"epoch {epoch + 1} loss {total / len(order):.6f} accuracy {correct / len(order):.4f}"
    tmp = ckpt_path + ".tmp"
    history.append(line)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "history": history}
    torch.save(state, tmp)
    os.replace(tmp, ckpt_path)
    write_metrics(history)
    print(f"train.py: {line}; checkpoint saved", flush=True)
write_metrics(history)
print("train.py: done", flush=True)
