"""One module per Beam job, each with an importable run(argv)."""
import os as _os

# TensorFlow's C++ INFO/WARNING start-up lines (oneDNN, CPU features) drown the
# jobs' own progress output; errors still show.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
