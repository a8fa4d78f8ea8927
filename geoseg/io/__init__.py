"""Reading scenes and slices, GDAL settings, and writing vectors, masks and files atomically."""
