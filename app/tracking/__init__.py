"""Detections become objects, per source: filters -> tracker -> zones -> object events."""
