"""Scoring predictions against truth: objects (F1, duplicates, seam splits) and masks (Dice, IoU)."""
