"""Benchmarks (not tests): each script prints ratios and the command that reruns it."""
