"""Ship length, beam and heading in metres and degrees, for any CRS."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.transform import from_origin

from geoseg.inference.attributes import ship_attributes
from geoseg.io.georef import pixel_to_crs
from geoseg.synth.tankers import Tanker, truth_frame


@pytest.mark.parametrize(
    "crs, transform, tol_m",
    [
        ("EPSG:32631", from_origin(400000, 5600000, 1.5, 1.5), 0.5),
        ("EPSG:32750", from_origin(400000, 7400000, 2.0, 2.0), 0.5),
        (
            "EPSG:32633",
            Affine.translation(500000, 6650000) @ Affine.rotation(25) @ Affine.scale(1.0, -1.0),
            0.5,
        ),
        # pixels square on the ground: 1e-5 deg of latitude, 1e-5 / cos(55 deg) of longitude
        ("EPSG:4326", from_origin(10.0, 55.0, 1e-5 / np.cos(np.radians(55)), 1e-5), 1.0),
    ],
    ids=["north-utm", "south-utm", "rotated", "geographic"],
)
def test_attributes_match_the_truth(crs, transform, tol_m):
    rng = np.random.default_rng(0)
    tankers = [
        Tanker(
            float(rng.uniform(300, 700)),
            float(rng.uniform(300, 700)),
            float(rng.uniform(80, 300)),
            float(rng.uniform(14, 45)),
            float(h),
            0,
            False,
            -1,
        )
        for h in rng.uniform(0, 360, 12)
    ]
    truth = truth_frame(tankers, transform, crs)
    got = ship_attributes(truth.geometry.values, crs)
    assert np.abs(got["length_m"].to_numpy(float) - truth["length_m"]).max() < tol_m
    assert np.abs(got["beam_m"].to_numpy(float) - truth["beam_m"]).max() < tol_m
    err = np.abs((got["heading_deg"].to_numpy(float) - truth["heading_deg"] + 180) % 360 - 180)
    assert err.max() < 1.0


def test_heading_points_to_the_bow_on_a_north_up_scene():
    # a tanker heading east (90 deg) on a north-up UTM raster
    t = Tanker(500, 500, 200, 30, 90, 0, False, -1)
    transform = from_origin(400000, 5600000, 1.0, 1.0)
    geom = pixel_to_crs(np.array([t.hull()], dtype=object), transform)
    got = ship_attributes(geom, "EPSG:32631")
    # grid north differs from true north by the meridian convergence (about 2 deg here)
    assert abs(got["heading_deg"].iloc[0] - 90) < 3


def test_no_crs_gives_nulls():
    got = ship_attributes(np.array([shapely.box(0, 0, 10, 2)], dtype=object), None)
    assert got.isna().all().all()


def test_beam_of_a_raster_outline_is_not_widened_by_its_staircase():
    """Outlines polygonised from pixels step along a diagonal hull: the oriented rectangle around
    them is up to a pixel too wide on each side. The midbody beam is not."""
    from rasterio.features import rasterize

    from geoseg.inference.vectorize import mask_to_geometry

    transform = from_origin(400000, 5600000, 2.0, 2.0)  # 2 m pixels: a 30 m beam is 15 px
    beams, envelopes = [], []
    for k, heading in enumerate((30.0, 45.0, 60.0, 135.0)):
        t = Tanker(150 + 0.3 * k, 150 + 0.7 * k, 120, 15, heading, 0, False, -1)  # pixels
        mask = rasterize([t.hull()], out_shape=(300, 300)).astype(bool)
        outline = mask_to_geometry(mask, 0, 0, largest=True)
        geom = pixel_to_crs(np.array([outline], dtype=object), transform)
        beams.append(ship_attributes(geom, "EPSG:32631")["beam_m"].iloc[0])
        rect = np.array(shapely.oriented_envelope(geom[0]).exterior.coords)
        envelopes.append(np.sort(np.hypot(*np.diff(rect, axis=0)[:2].T))[0])
    truth = 30 * 0.9996  # the UTM scale factor near the central meridian is below 1
    assert np.abs(np.array(beams) - truth).max() < 0.06 * truth
    assert np.median(envelopes) > 1.05 * truth  # what the rectangle alone would say
