"""Training geoseg's models from scratch: Mask R-CNN on tanker chips, U-Net on slices."""
