"""Model architectures geoseg can build from a checkpoint; importing registers them."""

from geoseg.models import maskrcnn, pointwise  # noqa: F401
