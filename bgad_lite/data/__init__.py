"""Data: the MVTec layout, reading images, the few-shot split, the embedded textures, training anomalies, downloads."""
