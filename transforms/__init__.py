"""DoFns, composite PTransforms and the pure per-image functions they call."""
from transforms.gcs_env import use_anonymous_credentials_with_emulator as _emulator

# Runs in every process that unpickles our transforms, including DirectRunner's
# multi-processing workers, which otherwise each wait ~30 s for credentials.
_emulator()
