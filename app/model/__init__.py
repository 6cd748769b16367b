"""The model and its maths, shared with training: bundle reading, labels, preprocessing, anchors, box coder, decode and NMS."""
