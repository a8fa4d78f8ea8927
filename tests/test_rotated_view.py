"""The 45-degree second view of Mask R-CNN: each object comes from the view where it lies closer to
the image axes, so that diagonal hulls side by side come apart."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from geoseg.models.maskrcnn import _axis_deviation, random_init, rotated_views


def boxy_detector(x: torch.Tensor) -> list[dict]:
    """A stand-in for a detector of axis-aligned boxes: bright regions whose boxes overlap come out
    as one detection, as hulls side by side on a diagonal do from a real one."""
    out = []
    for img in x:
        labels, n = ndimage.label(img[0].numpy() > 0.5)
        found = ndimage.find_objects(labels)
        group = list(range(n))

        def root(i, group=group):
            while group[i] != i:
                i = group[i]
            return i

        for i in range(n):
            for j in range(i):
                a, b = found[i], found[j]
                if all(a[k].start < b[k].stop and b[k].start < a[k].stop for k in (0, 1)):
                    group[root(i)] = root(j)
        roots = sorted({root(i) for i in range(n)})
        masks = np.stack([np.isin(labels, [i + 1 for i in range(n) if root(i) == r]) for r in roots]
                         or [np.zeros(img[0].shape, bool)])[: len(roots)]  # fmt: skip
        rows, cols = masks.any(2), masks.any(1)
        boxes = [
            [c.argmax(), r.argmax(), len(c) - c[::-1].argmax(), len(r) - r[::-1].argmax()]
            for r, c in zip(rows, cols, strict=True)
        ]
        out.append({
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.linspace(0.9, 0.8, len(roots)),
            "labels": torch.ones(len(roots), dtype=torch.int64),
            "masks": torch.from_numpy(masks[:, None].astype(np.float32)),
        })  # fmt: skip
    return out


def bar(shape, centre, length, width, degrees):
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(float)
    a = np.radians(degrees)
    u = (cc - centre[1]) * np.cos(a) + (rr - centre[0]) * np.sin(a)
    v = -(cc - centre[1]) * np.sin(a) + (rr - centre[0]) * np.cos(a)
    return (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_diagonal_neighbours_come_apart_and_each_object_comes_once():
    shape = (160, 192)
    truth = [
        bar(shape, (60, 60), 90, 10, 45),  # two hulls side by side, 4 px apart, on a diagonal:
        bar(shape, (70, 50), 90, 10, 45),  # their boxes overlap, so the straight view merges them
        bar(shape, (130, 140), 80, 12, 0),  # alone, along the rows
        bar(shape, (50, 160), 60, 10, 100),  # alone, near the columns
    ]
    assert not (truth[0] & truth[1]).any()
    x = torch.from_numpy(np.any(truth, axis=0).astype(np.float32))[None, None]
    straight = boxy_detector(x)[0]
    assert len(straight["scores"]) == 3  # the pair is one detection in the straight view

    got = rotated_views(boxy_detector, x)[0]
    masks = got["masks"][:, 0].numpy() > 0.5
    assert masks.shape == (4, *shape)
    for t in truth:
        assert max(iou(t, m) for m in masks) > 0.85
    assert (got["scores"][:-1] >= got["scores"][1:]).all()  # sorted by score
    # boxes are measured on the turned-back masks
    for m, box in zip(masks, got["boxes"].numpy(), strict=True):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert box[0] <= cols[0] and box[1] <= rows[0] and box[2] >= cols[-1] + 1 and box[3] >= rows[-1] + 1
        assert box[2] - box[0] <= cols[-1] + 1 - cols[0] + 4


def test_axis_deviation_and_elongation():
    shape = (100, 100)
    masks = torch.from_numpy(
        np.stack(
            [bar(shape, (50, 50), 60, 8, d) for d in (0, 30, 45, 80)] + [bar(shape, (50, 50), 20, 20, 0)]
        )
    ).float()
    dev, elong = _axis_deviation(masks)
    np.testing.assert_allclose(dev[:4].numpy(), [0, 30, 45, 10], atol=1.5)
    assert (elong[:4] > 4).all() and elong[4] < 1.2


def test_mask_rcnn_predicts_with_and_without_the_rotated_view():
    seg = random_init("light", seed=0)
    tiles = np.random.default_rng(0).uniform(0, 255, (2, 3, 96, 128)).astype(np.float32)
    tiles[1, :, 80:, :] = np.nan  # a padded edge tile
    seg.module.roi_heads.score_thresh = 0.0  # an untrained model: keep whatever it finds
    for rotated in (False, True):
        preds = seg.predict(tiles, rotated_view=rotated)
        assert len(preds) == 2
        for p in preds:
            n = len(p["scores"])
            assert p["masks"].shape == (n, 96, 128) and p["boxes"].shape == (n, 4)
            assert p["labels"].shape == (n,)
    assert seg.rotated_view is False  # the model's own setting is unchanged


def test_only_tiles_with_a_diagonal_object_are_turned_and_their_objects_are_those_of_every_tile_turned():
    shape = (160, 192)
    diagonal = np.any([bar(shape, (60, 60), 90, 10, 45), bar(shape, (70, 50), 90, 10, 45)], axis=0)
    straight = np.any([bar(shape, (130, 140), 80, 12, 0), bar(shape, (50, 160), 60, 10, 90)], axis=0)
    x = torch.from_numpy(np.stack([straight, diagonal, np.zeros(shape, bool)]).astype(np.float32))[:, None]
    calls = []

    def counting(batch):
        calls.append(len(batch))
        return boxy_detector(batch)

    got = rotated_views(counting, x)
    assert calls == [3, 1]  # every tile once, then only the tile with the diagonal pair, turned
    calls.clear()
    every = rotated_views(counting, x, every_tile=True)
    assert calls == [3, 3]
    for a, b in zip(got, every, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert len(got[1]["scores"]) == 2 and len(got[2]["scores"]) == 0
