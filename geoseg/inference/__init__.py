"""Tiled inference: tiling, the execution engine, vectorising, merging, blending, georeferenced features."""
