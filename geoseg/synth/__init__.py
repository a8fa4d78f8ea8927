"""Synthetic data written window by window: tanker scenes with truth, CT-like lung phantoms."""
