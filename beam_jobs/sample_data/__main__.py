"""CLI: ``python -m beam_jobs.sample_data --out DIR --cases N --seed S [--size WxH] [--nights K --start_date D]``."""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import re
import sys

from beam_jobs.cli import UsageError, clear_own_outputs, seed_arg
from beam_jobs.sample_data.generator import generate, validate_size


# What a sample set holds at the top of --out (generate's, generate_nights').
OUTPUTS = ("dataset", "ground_truth.csv", "uploads", "scin_cases.csv", "scin_labels.csv")


class _OneLineErrorParser(argparse.ArgumentParser):
    """Reports bad arguments as a single stderr line (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _size(text: str) -> tuple[int, int]:
    """argparse type for WIDTHxHEIGHT within the generator's limits."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    width, height = int(match.group(1)), int(match.group(2))
    try:
        validate_size(width, height)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return width, height


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the sample data CLI."""
    parser = _OneLineErrorParser(
        prog="python -m beam_jobs.sample_data",
        description="Generate a SCIN-style skin image dataset with known defects and ground truth.",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--cases", required=True, type=int, help="number of cases (1-3 images each)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="random seed (0 .. 2**32-1); same seed, same bytes")
    parser.add_argument("--size", type=_size, default=(640, 480), help="landscape frame WxH (default 640x480)")
    parser.add_argument("--nights", type=int, help="write K nights of --cases cases each as OUT/uploads/dt=YYYY-MM-DD/, "
                        "with re-uploads of earlier nights' photos (beam_jobs/sample_data/nights.py)")
    parser.add_argument("--start_date", default="2026-11-01", help="first night with --nights (YYYY-MM-DD)")
    return parser


def _keep_freed_memory() -> None:
    """Stop glibc from handing every freed full-frame array back to the OS.

    Rendering allocates dozens of frame-sized numpy temporaries per image;
    by default glibc serves each with a fresh mmap, and the page faults cost
    about as much as the rendering itself. Raising the mmap and trim
    thresholds keeps them in the heap. This is process-wide, so only the CLI
    (which owns its process) does it; elsewhere it is a no-op.
    """
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 512 << 20)
    except (OSError, AttributeError, TypeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate the dataset and print a one-line summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cases < 0:
        parser.error(f"argument --cases: must be >= 0, got {args.cases}")
    try:   # an earlier set's images would stay beside the new ones, outside its ground truth
        clear_own_outputs(args.out, OUTPUTS, "--out", "sample_data")
    except UsageError as e:
        parser.error(str(e))
    _keep_freed_memory()
    if args.nights is not None:
        from beam_jobs.sample_data.nights import generate_nights
        try:
            summary = generate_nights(args.out, args.nights, args.cases, args.seed, args.start_date, args.size)
        except ValueError as e:
            parser.error(str(e))
        print(f"sample_data: {summary['images']} images over {len(summary['dates'])} nights "
              f"({summary['reuploads']} re-uploads of earlier nights) -> {summary['uploads']}/dt=*")
        return 0
    summary = generate(args.out, args.cases, args.seed, args.size)
    mix = ", ".join(f"{n} {d}" for d, n in summary["defects"].items() if n)
    print(
        f"sample_data: {summary['images']} images in {summary['cases']} cases "
        f"({summary['labeled_cases']} labelled; {mix or 'no images'}) -> {summary['images_dir']}, "
        f"{summary['scin_cases_csv']}, {summary['scin_labels_csv']}, {summary['ground_truth_csv']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
