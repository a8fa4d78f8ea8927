"""Models: the segmenter contract and its loading, checkpoints, the architectures geoseg builds
(Mask R-CNN, U-Net, pointwise) and built-in plug-ins. Importing this package imports no torch."""
