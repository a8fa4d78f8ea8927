"""Object-level evaluation of predicted polygons against true polygons.

Matching is one-to-one at IoU >= 0.5 (SpaceNet style): candidate pairs are taken greedily by
decreasing IoU. Beyond precision, recall and F1 it counts the failures a tiled detector is
prone to:

- **duplicates**: extra predictions on a true object that is already found, each itself a good
  match (IoU >= threshold): the object was reported twice;
- **seam splits**: true objects covered by two or more predictions that each lie mostly on it
  (over half of the prediction's area) while at most one of them is a good match: the object came
  out in pieces;
- **parts**: predictions that match nothing but lie mostly on one true object and cover less than
  half of it: the detector found a piece of it (the bow half of a long hull, say).
"""

from __future__ import annotations

import json
import os

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geoseg.errors import EvalError
from geoseg.io.vectors import read_layer


def read_vectors(path: str | os.PathLike, role: str) -> gpd.GeoDataFrame:
    if not os.path.exists(path):
        raise EvalError(f"{role} '{path}': no such file")
    try:
        gdf = read_layer(path)
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise EvalError(f"{role} '{path}': not a readable vector file ({exc})") from exc
    gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
    return gdf


def _common_crs(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame):
    if pred.crs is None and truth.crs is None:
        return None
    if pred.crs is None or truth.crs is None:
        raise EvalError("prediction and truth: one has a CRS and the other has none")
    for gdf in (pred, truth):
        if gdf.crs.is_projected:
            return gdf.crs
    both = pred if len(pred) else truth
    if not len(both):
        return pred.crs
    return both.estimate_utm_crs()


def match_greedy(
    pairs_t: np.ndarray, pairs_p: np.ndarray, iou: np.ndarray, iou_threshold: float = 0.5
) -> tuple[dict[int, int], dict[int, int], list[float]]:
    """One-to-one matches of candidate pairs ``(pairs_t[k], pairs_p[k])`` with IoU ``iou[k]``,
    taken greedily by decreasing IoU (ties in the pairs' order) down to ``iou_threshold``:
    ``(truth -> prediction, prediction -> truth, matched IoUs)``.

    >>> match_greedy(np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([0.9, 0.6, 0.7]))
    ({0: 0, 1: 1}, {0: 0, 1: 1}, [0.9, 0.7])
    """
    matched_t: dict[int, int] = {}
    matched_p: dict[int, int] = {}
    ious: list[float] = []
    for k in np.argsort(-np.asarray(iou, dtype=np.float64), kind="stable"):
        if iou[k] < iou_threshold:
            break
        t, p = int(pairs_t[k]), int(pairs_p[k])
        if t in matched_t or p in matched_p:
            continue
        matched_t[t], matched_p[p] = p, t
        ious.append(float(iou[k]))
    return matched_t, matched_p, ious


def precision_recall_f1(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    """Precision, recall and F1 of ``tp`` matches. Nothing to find and nothing found is a perfect
    1.0; predictions where there is nothing to find (or nothing predicted where there is) 0.0.

    >>> precision_recall_f1(0, 0, 0), precision_recall_f1(0, 3, 0)
    ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    """
    precision = tp / n_pred if n_pred else (1.0 if n_true == 0 else 0.0)
    recall = tp / n_true if n_true else (1.0 if n_pred == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def evaluate(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *, iou_threshold: float = 0.5) -> dict:
    """Compare predictions with truth; returns a JSON-ready dict of counts and scores."""
    crs = _common_crs(pred, truth)
    if crs is not None:
        pred, truth = pred.to_crs(crs), truth.to_crs(crs)
    pg = shapely.make_valid(np.asarray(pred.geometry.values, dtype=object))
    tg = shapely.make_valid(np.asarray(truth.geometry.values, dtype=object))
    n_pred, n_true = len(pg), len(tg)
    pairs_t, pairs_p = (
        shapely.STRtree(pg).query(tg, predicate="intersects")
        if n_pred and n_true
        else (np.array([], int),) * 2
    )
    inter = shapely.area(shapely.intersection(tg[pairs_t], pg[pairs_p])) if pairs_t.size else np.array([])
    ta, pa = shapely.area(tg), shapely.area(pg)
    iou = inter / np.maximum(ta[pairs_t] + pa[pairs_p] - inter, 1e-12) if pairs_t.size else inter

    matched_t, matched_p, match_ious = match_greedy(pairs_t, pairs_p, iou, iou_threshold)

    duplicates = 0
    seam_splits = 0
    mostly_on = inter >= 0.5 * np.maximum(pa[pairs_p], 1e-12) if pairs_t.size else np.array([], bool)
    for t in range(n_true):
        sel = (pairs_t == t) & mostly_on
        good = int(np.sum(sel & (iou >= iou_threshold)))
        if t in matched_t:
            duplicates += max(0, good - 1)
        if int(sel.sum()) >= 2 and good <= 1:
            seam_splits += 1

    # parts: unmatched predictions lying mostly on one true object that they cover less than half of
    covers = inter / np.maximum(ta[pairs_t], 1e-12) if pairs_t.size else inter
    part_of = mostly_on & (covers < 0.5)
    parts = len({int(p) for p in pairs_p[part_of] if int(p) not in matched_p}) if pairs_t.size else 0

    tp = len(matched_t)
    attributes = _attribute_errors(pred, truth, pairs_t, pairs_p, matched_t, matched_p)
    precision, recall, f1 = precision_recall_f1(tp, n_pred, n_true)
    return {
        "iou_threshold": iou_threshold,
        "predictions": n_pred,
        "truths": n_true,
        "true_positives": tp,
        "false_positives": n_pred - tp,
        "false_negatives": n_true - tp,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "mean_iou": round(float(np.mean(match_ious)), 4) if match_ious else None,
        "duplicates": duplicates,
        "seam_splits": seam_splits,
        "parts": parts,
        "crs": crs.to_string() if crs is not None else None,
        **attributes,
    }


def _attribute_errors(pred, truth, pairs_t, pairs_p, matched_t: dict, matched_p: dict) -> dict:
    """Median errors of ship attributes over matched objects, when both sides carry them."""
    out = {}
    if not matched_t:
        return out
    t_idx = np.array(list(matched_t.keys()))
    p_idx = np.array([matched_t[t] for t in t_idx])
    for col in ("length_m", "beam_m"):
        if col in pred.columns and col in truth.columns:
            tv = pd.to_numeric(truth[col], errors="coerce").to_numpy(float)[t_idx]
            pv = pd.to_numeric(pred[col], errors="coerce").to_numpy(float)[p_idx]
            rel = np.abs(pv - tv) / np.maximum(np.abs(tv), 1e-9)
            if np.isfinite(rel).any():
                out[f"median_{col.removesuffix('_m')}_error_pct"] = round(float(np.nanmedian(rel)) * 100, 2)
    if "heading_deg" in pred.columns and "heading_deg" in truth.columns:
        tv = pd.to_numeric(truth["heading_deg"], errors="coerce").to_numpy(float)[t_idx]
        pv = pd.to_numeric(pred["heading_deg"], errors="coerce").to_numpy(float)[p_idx]
        diff = np.abs((pv - tv + 180) % 360 - 180)
        if np.isfinite(diff).any():
            out["median_heading_error_deg"] = round(float(np.nanmedian(diff)), 2)
    return out


def summary(report: dict) -> str:
    """A short human-readable summary of :func:`evaluate`'s report."""
    miou = "n/a" if report["mean_iou"] is None else f"{report['mean_iou']:.3f}"
    return (
        f"objects: {report['truths']} true, {report['predictions']} predicted, "
        f"{report['true_positives']} matched at IoU >= {report['iou_threshold']}\n"
        f"precision {report['precision']:.3f}  recall {report['recall']:.3f}  "
        f"F1 {report['f1']:.3f}  mean IoU {miou}\n"
        f"duplicates {report['duplicates']}  seam splits {report['seam_splits']}  parts {report['parts']}"
        + _attribute_line(report)
    )


def _attribute_line(report: dict) -> str:
    parts = []
    for key, label, unit in (
        ("median_length_error_pct", "length", "%"),
        ("median_beam_error_pct", "beam", "%"),
        ("median_heading_error_deg", "heading", " deg"),
    ):
        if key in report:
            parts.append(f"{label} {report[key]:.1f}{unit}")
    return ("\nmedian errors of matched objects: " + ", ".join(parts)) if parts else ""


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True)
