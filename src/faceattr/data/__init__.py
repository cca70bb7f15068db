"""Data sources, manifests, alignment, splits and the packed aligned-face store."""
