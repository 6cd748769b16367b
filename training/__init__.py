"""edgedet training/export package (TensorFlow). May import `app`; never the other way round."""

import os

# Model Garden and tensorflow-model-optimization need Keras 2 (tf_keras); this must be set
# before TensorFlow is first imported anywhere in the process.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
