"""Make Beam's gs:// filesystem talk to a local GCS emulator without delay.

google-cloud-storage honours STORAGE_EMULATOR_HOST by itself, but Beam first
looks for Google credentials and, finding none, retries with backoff for about
30 s in every process before connecting anonymously. An emulator needs no
credentials, so when STORAGE_EMULATOR_HOST is set we pre-fill Beam's
credentials cache with "anonymous". Nothing changes when it is unset.
"""
from __future__ import annotations

import os

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def use_anonymous_credentials_with_emulator() -> bool:
    """Pre-set Beam's credential cache to anonymous if an emulator is configured.

    Returns True when the emulator setting was applied.
    """
    if not os.environ.get(EMULATOR_ENV):
        return False
    from transforms.io.compat import set_beam_credentials_anonymous
    set_beam_credentials_anonymous()
    return True
