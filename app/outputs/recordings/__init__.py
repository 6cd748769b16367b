"""Snapshots and clips: best-frame JPEGs, MP4 clips from a pre-capture ring, the background writer, retention, the recent-events list."""
