"""GPU check of the Mask R-CNN path: the committed checkpoint on CUDA gives the CPU's detections
on the same tiles, training steps run on CUDA, and forward time per tile on the GPU.

Needs only torch, torchvision, safetensors and numpy on the GPU machine. First, here:

    .venv/bin/python bench/gpu_check.py --prepare .device/gpu   # tiles + CPU predictions

then on the GPU machine (carry .device):

    python3 bench/gpu_check.py --check .device/gpu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "geoseg/weights/tankers-light.safetensors"


def prepare(folder: Path, scene: str) -> None:
    from geoseg.inference.tiling import TileGrid
    from geoseg.io.refs import open_scene
    from geoseg.models.checkpoint import load_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    seg = load_checkpoint(MODEL, device="cpu")
    with open_scene(scene) as sc:
        grid = TileGrid(sc.height, sc.width, size=512, overlap=128)
        tiles = [sc.read(t.window) for t in list(grid)[:40]]
    tiles = np.stack(tiles)
    preds = seg.predict(tiles)
    keep = [i for i, p in enumerate(preds) if (p["scores"] >= 0.5).any()][:8]
    np.save(folder / "tiles.npy", tiles[keep].astype(np.uint8))
    for k, i in enumerate(keep):
        p = preds[i]
        sel = p["scores"] >= 0.5
        np.save(folder / f"cpu_masks_{k}.npy", p["masks"][sel] >= 0.5)
    print(f"saved {len(keep)} tiles with detections to {folder}")


def check(folder: Path) -> None:
    import torch

    from geoseg.models.checkpoint import load_checkpoint
    from geoseg.models.maskrcnn import CONFIGS, build_maskrcnn, instance_target, no_resize

    assert torch.cuda.is_available(), "no CUDA device"
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    tiles = np.load(folder / "tiles.npy").astype(np.float32)
    seg = load_checkpoint(MODEL)  # picks CUDA by itself
    assert seg.device.type == "cuda", seg.device
    preds = seg.predict(tiles)
    worst = 1.0
    for k, p in enumerate(preds):
        cpu = np.load(folder / f"cpu_masks_{k}.npy")
        gpu = p["masks"][p["scores"] >= 0.5] >= 0.5
        for m in cpu:  # each CPU detection has a GPU twin
            inter = (gpu & m).sum((1, 2))
            union = (gpu | m).sum((1, 2))
            best = (inter / np.maximum(union, 1)).max() if len(gpu) else 0.0
            worst = min(worst, float(best))
        print(f"tile {k}: {len(cpu)} CPU detections, {len(gpu)} GPU detections")
    print(f"worst IoU of a CPU detection with its GPU twin: {worst:.4f}")

    # forward time per 512 tile on the GPU (batch 8 and 32), after warm-up
    for batch in (8, 32):
        x = np.repeat(tiles[:1], batch, axis=0)
        seg.predict(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(3):
            seg.predict(x)
        torch.cuda.synchronize()
        per_tile = (time.perf_counter() - t0) / (3 * batch) * 1000
        print(f"GPU predict, batch {batch}: {per_tile:.1f} ms per 512 tile")

    # training steps on CUDA through the same model builder and target format as geoseg train
    torch.manual_seed(0)
    model = build_maskrcnn({**CONFIGS["light"], "name": "light"}, in_channels=3, num_classes=2).cuda().train()
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    masks = np.zeros((1, 256, 256), np.uint8)
    masks[0, 100:140, 60:200] = 1
    target = {k: v.cuda() for k, v in instance_target(masks).items()}
    losses = []
    for _ in range(20):
        no_resize(model, 256, 256)
        images = [torch.randn(3, 256, 256, device="cuda") for _ in range(4)]
        for im in images:  # the object stands out as in a normalised chip
            im[:, 100:140, 60:200] += 3.0
        out = model(images, [target] * 4)
        loss = sum(out.values())
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # as geoseg train does
        optim.step()
        losses.append(loss.item())
    print(f"CUDA training: 20 steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert all(np.isfinite(losses)), losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", type=Path)
    ap.add_argument("--check", type=Path)
    ap.add_argument("--scene", default="demo/scene.tif")
    args = ap.parse_args()
    if args.prepare:
        prepare(args.prepare, args.scene)
    if args.check:
        check(args.check)


if __name__ == "__main__":
    main()
