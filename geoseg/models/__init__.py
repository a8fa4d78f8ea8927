"""Model architectures geoseg can build from a checkpoint; importing registers them."""

from geoseg.models import maskrcnn, pointwise, unet  # noqa: F401
