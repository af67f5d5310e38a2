"""Synthetic SCIN-style dermatology dataset with known defects and ground truth.

Run ``python -m beam_jobs.sample_data --out DIR --cases N --seed S [--size WxH]``
or call :func:`generate`.
"""
from beam_jobs.sample_data.generator import generate

__all__ = ["generate"]
