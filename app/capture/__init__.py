"""Frame sources: cameras, streams, files, image folders and the synthetic camera."""
