"""Train the bundled demo detector (cars and trucks at 0.10 m per pixel) on CPU.

Developer tool: needs torch (``pip install torch==2.13.0``, CPU build), never a
dependency of geodet. Seeded and rerunnable::

    python -m tools.train_demo_model --out geodet/data/vehicles.onnx

It generates training scenes with `geodet.synthetic.vehicle_scene` (seeds 1000 and
up; the demo and the tests use seeds below 1000, never seen in training), samples
random 256 x 256 crops with flips and quarter turns, and trains a small
CenterNet-style network (stride 4: a class heatmap, box size and centre offset).
The exported ONNX graph decodes itself into the Ultralytics layout
``[B, 4 + nc, N]`` (peaks of the heatmap as class scores), with metadata: class
names, input size, ground resolution (``resolution`` = 10 cm/px).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from torch import nn

from geodet.synthetic import CLASSES, vehicle_scene

SIZE, STRIDE = 256, 4
NC = len(CLASSES)


def cbr(i: int, o: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, dilation, dilation, bias=False),
                         nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class Net(nn.Module):
    """A small encoder (to stride 16, dilated for a wide view) and decoder to stride 4."""

    def __init__(self) -> None:
        super().__init__()
        self.s4 = nn.Sequential(cbr(3, 16, 2), cbr(16, 32, 2), cbr(32, 32))
        self.s8 = nn.Sequential(cbr(32, 48, 2), cbr(48, 48), cbr(48, 48, dilation=2))
        self.s16 = nn.Sequential(cbr(48, 64, 2), cbr(64, 64, dilation=2),
                                 cbr(64, 64, dilation=4))
        self.lat16, self.lat8 = nn.Conv2d(64, 48, 1), nn.Conv2d(48, 32, 1)
        self.fuse8, self.fuse4 = cbr(48, 48), cbr(32, 32)
        self.head = nn.Sequential(cbr(32, 32), nn.Conv2d(32, NC + 4, 1))
        nn.init.constant_(self.head[-1].bias[:NC], -2.19)  # prior 0.1 on the heatmap

    def forward(self, x):
        a = self.s4(x)
        b = self.s8(a)
        c = self.s16(b)
        b = self.fuse8(b + F.interpolate(self.lat16(c), scale_factor=2.0))
        a = self.fuse4(a + F.interpolate(self.lat8(b), scale_factor=2.0))
        out = self.head(a)
        return out[:, :NC], out[:, NC:NC + 2], out[:, NC + 2:]  # heat, log size, offset


class Exported(nn.Module):
    """The network plus decoding into the Ultralytics layout, for ONNX export."""

    def __init__(self, net: Net) -> None:
        super().__init__()
        self.net = net
        n = SIZE // STRIDE
        gy, gx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        self.register_buffer("gx", gx.float().reshape(1, -1))
        self.register_buffer("gy", gy.float().reshape(1, -1))

    def forward(self, images):
        heat, logwh, off = self.net(images)
        heat = torch.sigmoid(heat)
        peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat).float()
        b = images.shape[0]
        off, wh = off.reshape(b, 2, -1), torch.exp(logwh.reshape(b, 2, -1))
        cx = (self.gx + off[:, 0]) * STRIDE
        cy = (self.gy + off[:, 1]) * STRIDE
        boxes = torch.stack([cx, cy, wh[:, 0], wh[:, 1]], dim=1)
        return torch.cat([boxes, peaks.reshape(b, NC, -1)], dim=1)


def make_scenes(n: int, size: int, work: Path):
    scenes = []
    for k in range(n):
        path = work / f"train{k}.tif"
        boxes, classes = vehicle_scene(path, size=size, seed=1000 + k)
        with rasterio.open(path) as ds:
            scenes.append((ds.read(), boxes, classes))
    return scenes


def sample(scenes, rng: np.random.Generator):
    """One augmented crop: image (3, S, S) float and its boxes (N, 4) and classes."""
    image, boxes, classes = scenes[rng.integers(len(scenes))]
    x0, y0 = rng.integers(0, image.shape[2] - SIZE), rng.integers(0, image.shape[1] - SIZE)
    crop = image[:, y0:y0 + SIZE, x0:x0 + SIZE].astype(np.float32) / 255
    b = boxes - [x0, y0, x0, y0]
    clipped = np.clip(b, 0, SIZE)
    area = np.prod(b[:, 2:] - b[:, :2], axis=1)
    seen = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1) / area
    keep = seen >= 0.6
    b, c = clipped[keep], classes[keep]
    if rng.random() < 0.5:  # horizontal flip
        crop = crop[:, :, ::-1]
        b = np.stack([SIZE - b[:, 2], b[:, 1], SIZE - b[:, 0], b[:, 3]], 1)
    for _ in range(rng.integers(0, 4)):  # quarter turns (counter-clockwise)
        crop = np.rot90(crop, 1, axes=(1, 2))
        b = np.stack([b[:, 1], SIZE - b[:, 2], b[:, 3], SIZE - b[:, 0]], 1)
    crop = crop * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05)
    return np.ascontiguousarray(crop), b, c


def targets(boxes: np.ndarray, classes: np.ndarray):
    """Heatmap (NC, n, n) with an elliptical Gaussian per object, and per-object
    centre cell, log size and sub-cell offset."""
    n = SIZE // STRIDE
    heat = np.zeros((NC, n, n), np.float32)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2 / STRIDE
    sizes = boxes[:, 2:] - boxes[:, :2]
    cells = np.clip(np.floor(centres).astype(int), 0, n - 1)
    ys, xs = np.mgrid[0:n, 0:n] + 0.5
    for (cx, cy), (w, h), cls in zip(centres, sizes, classes, strict=True):
        sx, sy = max(w / STRIDE / 6, 0.6), max(h / STRIDE / 6, 0.6)
        g = np.exp(-((xs - cx) ** 2) / (2 * sx * sx) - ((ys - cy) ** 2) / (2 * sy * sy))
        heat[cls] = np.maximum(heat[cls], g)
    for (i, j), cls in zip(cells, classes, strict=True):
        heat[cls, j, i] = 1.0
    return heat, cells, np.log(np.maximum(sizes, 1)), centres - cells


def batch(scenes, rng, size: int):
    images, heats, index, logwh, off = [], [], [], [], []
    for k in range(size):
        img, b, c = sample(scenes, rng)
        h, cells, lw, o = targets(b, c)
        images.append(img)
        heats.append(h)
        n = SIZE // STRIDE
        index.extend(k * n * n + cells[:, 1] * n + cells[:, 0])
        logwh.append(lw)
        off.append(o)
    return (torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(heats)),
            torch.as_tensor(np.array(index, np.int64)),
            torch.from_numpy(np.concatenate(logwh).astype(np.float32)),
            torch.from_numpy(np.concatenate(off).astype(np.float32)))


def focal(pred_logits, heat):
    """CenterNet's penalty-reduced focal loss, per object."""
    p = torch.sigmoid(pred_logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p ** 2 * (1 - heat) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def gathered(t, index):
    """Values of a (B, 2, n, n) map at flat cell indexes -> (K, 2)."""
    return t.permute(0, 2, 3, 1).reshape(-1, 2)[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="geodet/data/vehicles.onnx")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--scene-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as work:
        scenes = make_scenes(args.scenes, args.scene_size, Path(work))
    print(f"{args.scenes} scenes in {time.time() - t0:.0f} s", flush=True)
    net = Net()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps,
                                                pct_start=0.1)
    net.train()
    for step in range(1, args.steps + 1):
        images, heats, index, logwh, off = batch(scenes, rng, args.batch)
        heat_p, logwh_p, off_p = net(images)
        loss_h = focal(heat_p, heats)
        loss_s = F.l1_loss(gathered(logwh_p, index), logwh) if len(index) else 0.0
        loss_o = F.l1_loss(gathered(off_p, index), off) if len(index) else 0.0
        loss = loss_h + loss_s + loss_o
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  heat {loss_h.item():.3f}  "
                  f"size {float(loss_s):.3f}  offset {float(loss_o):.3f}  "
                  f"{time.time() - t0:.0f} s", flush=True)
    net.eval()
    exported = Exported(net)
    torch.onnx.export(
        exported, torch.zeros(1, 3, SIZE, SIZE), args.out, input_names=["images"],
        output_names=["output0"], dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
        opset_version=17, dynamo=False)
    import onnx

    model = onnx.load(args.out)
    # The exporter leaves the channel axis of the output dynamic; it is 4 + nc.
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 4 + NC
    meta = {"names": json.dumps(dict(enumerate(CLASSES))), "imgsz": json.dumps([SIZE, SIZE]),
            "task": "detect", "resolution": "10", "stride": str(STRIDE),
            "description": "geodet demo detector: cars and trucks at 0.10 m/px "
                           "(trained on synthetic scenes by tools/train_demo_model.py)"}
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, args.out)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"wrote {args.out}: {n_params} parameters, {Path(args.out).stat().st_size} bytes, "
          f"{time.time() - t0:.0f} s in all, {args.steps} steps")


if __name__ == "__main__":
    main()
