"""What the jobs are made of, one subpackage per concern: image (pure per-image functions), io
(plumbing), curate, dataset, scoring, evaluation (each job's composites and algorithms)."""
import os as _os

# OpenCV reads its own pixel cap once, when cv2 first loads; set it before any
# module here imports cv2 so a pixel bomb can never be allocated (image/decode.py
# also refuses declared sizes over the policy's max_pixels before decoding).
# The one definition of the default max_pixels (transforms.image.decode's default;
# tests/test_templates.py checks templates/Dockerfile sets the same).
DEFAULT_MAX_PIXELS = 100_000_000
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))

from transforms.io.gcs_env import use_anonymous_credentials_with_emulator as _emulator  # noqa: E402

# Runs in every process that unpickles our transforms, including DirectRunner's
# multi-processing workers, which otherwise each wait ~30 s for credentials.
_emulator()
