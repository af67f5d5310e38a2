"""TFDS metadata beside TFRecord shards, so tfds.builder_from_directory loads them.

TFDS reads a directory through its dataset_info.json (name, version, file
format, per split the shard lengths and a file-name template) and its
features.json (+ `<feature>.labels.txt` for ClassLabel names). They are made
here with TFDS's own classes (DatasetInfo, SplitInfo, FeaturesDict), written
to a local scratch folder, then copied with write_atomically so they go
through Beam's FileSystems (local or gs://) like every other output.
"""
from __future__ import annotations

import os
import tempfile

from apache_beam.io.filesystems import FileSystems

from transforms.io.sharded_write import write_atomically

FILE_FORMAT = "tfrecord"  # TFDS reads TFRecords uncompressed only


def tfds_shard_name(dataset: str, split: str, index: int, num_shards: int) -> str:
    """TFDS's default shard name: `{dataset}-{split}.tfrecord-SSSSS-of-NNNNN`."""
    return f"{dataset}-{split}.{FILE_FORMAT}-{index:05d}-of-{num_shards:05d}"


def write_tfds_metadata(directory: str, dataset: str, version: str, features, shard_lengths: dict,
                        description: str, supervised_keys: tuple | None = None) -> list[str]:
    """Write TFDS's metadata files for the shards in `directory`; returns their paths.

    shard_lengths: {split: [examples in shard 0, 1, ...]}; the shards must be
    named tfds_shard_name(dataset, split, i, n) and exist (their sizes go into
    the split info). A split with no examples is left out: TFDS takes 0 for
    "unknown" and fails to read it, where an absent split is a clear error.
    """
    import tensorflow_datasets as tfds
    sizes = {m.path.rsplit("/", 1)[-1]: m.size_in_bytes for m in
             FileSystems.match([FileSystems.join(directory, f"{dataset}-*.{FILE_FORMAT}-*")])[0].metadata_list}
    splits = []
    for split, lengths in sorted(shard_lengths.items()):
        if not sum(lengths):
            continue
        names = [tfds_shard_name(dataset, split, i, len(lengths)) for i in range(len(lengths))]
        missing = [n for n in names if n not in sizes]
        if missing:
            raise FileNotFoundError(f"TFDS shards missing in {directory}: {', '.join(missing)}")
        splits.append(tfds.core.SplitInfo(name=split, shard_lengths=list(lengths),
                                          num_bytes=sum(sizes[n] for n in names)))
    identity = tfds.core.DatasetIdentity(name=dataset, version=tfds.core.Version(version),
                                         data_dir=directory, module_name="")
    info = tfds.core.DatasetInfo(builder=identity, description=description, features=features,
                                 supervised_keys=supervised_keys)
    info.set_file_format(FILE_FORMAT)
    info.set_splits(tfds.core.SplitDict(splits))
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        info.write_to_directory(scratch)
        for name in sorted(os.listdir(scratch)):
            with open(os.path.join(scratch, name), "rb") as f:
                written.append(write_atomically(FileSystems.join(directory, name), f.read()))
    return written
