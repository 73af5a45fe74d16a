"""Image classification with a saved PyTorch model: an ordinary program, unchanged for the TEE.

It reads alexnet-pretrained.pt, input.jpg and classes.txt from the working directory and
writes the five most likely classes to result.txt there. Under `pfs run` each of the four is a
single-file encrypted mount: the host files are Gramine protected files, and the key comes from
the data owner's key server after (simulated) attestation.
"""

import torch
from PIL import Image
from torchvision import transforms

torch.set_num_threads(1)  # the same arithmetic natively and in the TEE: results compare bytewise

# The file holds a whole pickled module, not a state dict: weights_only=False is required
# (and is why the model must come from someone you trust, here through the encrypted mount).
model = torch.load("alexnet-pretrained.pt", weights_only=False)
model.eval()

preprocess = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)
with Image.open("input.jpg") as img:
    batch = preprocess(img.convert("RGB")).unsqueeze(0)

with open("classes.txt") as f:
    classes = [line.strip() for line in f]

with torch.no_grad():
    out = model(batch)
percent = torch.nn.functional.softmax(out, dim=1)[0] * 100
top = torch.argsort(out[0], descending=True)[:5]
result = [(classes[i], round(percent[i].item(), 4)) for i in top]

with open("result.txt", "w") as f:
    f.write(f"{result}\n")
print("pytorchexample.py: wrote result.txt:", result)
