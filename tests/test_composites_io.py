"""The I/O composites, each alone in a TestPipeline on a few in-memory rows:
WriteGroupedShards, WriteSortedShards, WriteTFRecordShards, LockOutput, FinalizeOutput."""
from __future__ import annotations

import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.io.run_lock import FinalizeOutput, LockOutput, new_lock_info
from transforms.io.sharded_write import (WriteGroupedShards, WriteSortedShards, jsonl_encoder, shard_name,
                                      stable_shard)
from transforms.io.tfrecords import WriteTFRecordShards, example_order


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path).read().splitlines()]


def _write_grouped(out, grouped, named_groups, spill=None):
    with TestPipeline() as p:
        written = (p
                   | "Rows" >> beam.Create(grouped)
                   | WriteGroupedShards(lambda g, i, n: os.path.join(out, shard_name(g, i, n, ".jsonl")),
                                        jsonl_encoder(), key_fn=lambda e: e["k"], per_shard=2,
                                        groups=p | "Groups" >> beam.Create(named_groups), spill=spill))
        assert_that(written | beam.Map(lambda w: w[:4]), equal_to(_expected_shards(grouped, named_groups)))


def _expected_shards(grouped, named_groups):
    """(group, index, num_shards, count) for every shard: per_shard 2, shard by stable_shard(key)."""
    keys = {}
    for g, e in grouped:
        keys.setdefault(g, []).append(e["k"])
    for g in named_groups:
        keys.setdefault(g, [])
    out = []
    for g, ks in keys.items():
        n = max(1, -(-len(ks) // 2))
        out += [(g, i, n, sum(stable_shard(k, n) == i for k in ks)) for i in range(n)]
    return out


def test_grouped_shards_place_by_key_sort_within_and_write_every_shard(tmp_path):
    grouped = [("a", {"k": f"k{i}", "v": i}) for i in (4, 0, 3, 1, 2)] + [("b", {"k": "only", "v": 9})]
    out_1, out_2 = tmp_path / "one", tmp_path / "two"
    _write_grouped(str(out_1), grouped, ["c"])  # c: named but no elements
    names = sorted(os.listdir(out_1))
    assert names == ["a-00000-of-00003.jsonl", "a-00001-of-00003.jsonl", "a-00002-of-00003.jsonl",
                     "b-00000-of-00001.jsonl", "c-00000-of-00001.jsonl"]
    assert (out_1 / "c-00000-of-00001.jsonl").read_bytes() == b""
    for name in names[:3]:
        keys = [r["k"] for r in _lines(out_1 / name)]
        assert keys == sorted(keys)
        assert all(stable_shard(k, 3) == int(name[2:7]) for k in keys)
    assert sorted(r["v"] for n in names[:3] for r in _lines(out_1 / n)) == [0, 1, 2, 3, 4]
    # Arrival order differs, bytes do not.
    _write_grouped(str(out_2), grouped[::-1], ["c"])
    assert {n: (out_1 / n).read_bytes() for n in names} == {n: (out_2 / n).read_bytes() for n in os.listdir(out_2)}


def test_grouped_shards_spilled_write_the_same_bytes_and_remove_the_spill(tmp_path):
    """With spill (as curate writes on DirectRunner), the elements wait in
    local files, repacked ones for a multi-shard group too, and the shards
    come out byte for byte the same; the spill folder is gone after."""
    grouped = [("a", {"k": f"k{i}", "v": i}) for i in range(40)] + [("b", {"k": "only", "v": 9})]
    plain, spilled, folder = tmp_path / "plain", tmp_path / "spilled", tmp_path / "spill"
    _write_grouped(str(plain), grouped, ["c"])
    _write_grouped(str(spilled), grouped, ["c"], spill=str(folder))
    names = sorted(os.listdir(plain))
    assert len(names) == 20 + 2 and sorted(os.listdir(spilled)) == names
    assert all((plain / n).read_bytes() == (spilled / n).read_bytes() for n in names)
    assert not folder.exists()


def test_spilled_packs_go_out_as_references_to_files_already_written(tmp_path):
    """PackInBundles(spill=...) sends no packed bytes: each reference names
    a file that exists when it goes out and reads back as the pack."""
    from transforms.io import spill
    from transforms.io.packing import SPILL_RECORDS, PackInBundles, unpack

    fn = PackInBundles(size=3, spill=str(tmp_path / "d"))
    fn.start_bundle()
    refs = []
    for i in range(3 * SPILL_RECORDS + 4):
        for ref in fn.process(i):
            assert os.path.exists(ref[0])
            refs.append(ref)
    assert len(refs) == SPILL_RECORDS  # one file's worth (3 x SPILL_RECORDS elements) before the bundle's end
    for wv in fn.finish_bundle():
        assert os.path.exists(wv.value[0])
        refs.append(wv.value)
    assert [x for ref in refs for x in unpack(spill.load(ref))] == list(range(3 * SPILL_RECORDS + 4))


def test_sorted_shards_write_one_empty_shard_for_nothing(tmp_path):
    with TestPipeline() as p:
        paths = (p | beam.Create([]).with_output_types(dict)
                 | WriteSortedShards(str(tmp_path), "dead_letters", ".jsonl", jsonl_encoder(), key_fn=lambda e: e["uri"]))
        assert_that(paths, equal_to([os.path.join(str(tmp_path), "dead_letters-00000-of-00001.jsonl")]))
    assert os.listdir(tmp_path) == ["dead_letters-00000-of-00001.jsonl"]
    assert (tmp_path / "dead_letters-00000-of-00001.jsonl").read_bytes() == b""


def test_sorted_shards_split_by_per_shard_and_keep_only_the_picked_fields(tmp_path):
    rows = [{"uri": f"u{i}", "reason": "r", "secret": "x"} for i in range(5)]
    with TestPipeline() as p:
        paths = (p | beam.Create(rows)
                 | WriteSortedShards(str(tmp_path), "d", ".jsonl", jsonl_encoder(["uri", "reason"]),
                                     key_fn=lambda e: e["uri"], per_shard=2))
        assert_that(paths | beam.Map(os.path.basename),
                    equal_to([f"d-0000{i}-of-00003.jsonl" for i in range(3)]))
    got = [r for n in sorted(os.listdir(tmp_path)) for r in _lines(tmp_path / n)]
    assert sorted(r["uri"] for r in got) == [f"u{i}" for i in range(5)]
    assert all(set(r) == {"uri", "reason"} for r in got)


@pytest.mark.parametrize("gz", [False, True])
def test_tfrecord_shards_read_back_with_beams_own_reader(tmp_path, gz):
    records = [("train", f"key{i}", f"payload-{i}".encode() * (i + 1)) for i in range(7)] + \
              [("test", "t0", b"only test record")]
    out = str(tmp_path / "records")
    with TestPipeline() as p:
        written = p | beam.Create(records) | WriteTFRecordShards(out, target_bytes=10 ** 6, gzip_output=gz)
        suffix = ".tfrecord.gz" if gz else ".tfrecord"
        assert_that(written, equal_to([("train", 0, 1, 7, f"train-00000-of-00001{suffix}"),
                                       ("test", 0, 1, 1, f"test-00000-of-00001{suffix}")]))
    with TestPipeline() as p:  # Beam's reader checks every length and data CRC
        back = p | beam.io.ReadFromTFRecord(os.path.join(out, f"train-*{suffix}"))
        assert_that(back, equal_to([r[2] for r in records if r[0] == "train"]))
    # One shard: the records follow the hash of their keys.
    from apache_beam.io.tfrecordio import _TFRecordUtil
    import gzip
    import io
    data = open(os.path.join(out, f"train-00000-of-00001{suffix}"), "rb").read()
    stream = io.BytesIO(gzip.decompress(data) if gz else data)
    in_file = []
    while (record := _TFRecordUtil.read_record(stream)) is not None:
        in_file.append(record)
    by_payload = {r[2]: r[1] for r in records}
    assert [by_payload[r] for r in in_file] == sorted((r[1] for r in records if r[0] == "train"), key=example_order)


def test_tfrecord_shards_refuse_gzip_for_tfds(tmp_path):
    with pytest.raises(ValueError, match="TFDS reads uncompressed"):
        WriteTFRecordShards(str(tmp_path), 10 ** 6, gzip_output=True, tfds_name="skin_images")


def test_lock_output_takes_the_lock_clears_the_marker_and_refuses_a_second_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "_SUCCESS").write_text("")  # an older complete output
    me = new_lock_info("curate", run_id="first")
    with TestPipeline() as p:
        assert_that(p | LockOutput(str(out), me, {"retries": 1}), equal_to([str(out / "_SUCCESS")]))
    assert not (out / "_SUCCESS").exists()
    held = json.loads((out / "_LOCK" / f"{me['attempt']}.json").read_text())
    assert held["run_id"] == "first" and held["job"] == "curate"
    (out / "_SUCCESS").write_text("")
    other = new_lock_info("curate", run_id="second")
    with pytest.raises(Exception, match="is locked by run first"):
        with TestPipeline() as p:
            p | LockOutput(str(out), other, {"retries": 1})
    assert (out / "_SUCCESS").exists()  # a refused run changes nothing
    assert sorted(os.listdir(out / "_LOCK")) == [f"{me['attempt']}.held", f"{me['attempt']}.json"]


def test_finalize_output_writes_the_marker_then_releases_only_its_own_lock(tmp_path):
    """LockOutput then FinalizeOutput in one pipeline: finalize runs once per
    element with its kwargs and side inputs, the marker is written while the
    lock is held, and only this run's lock candidate is dropped."""
    out = tmp_path / "out"
    out.mkdir()
    me = new_lock_info("curate", run_id="mine")

    def finalize(element, total, *, label):
        held = sorted(os.listdir(out / "_LOCK"))  # still locked while the marker is written:
        assert held == [f"{me['attempt']}.held", f"{me['attempt']}.json"], held
        (out / "_SUCCESS").write_text(json.dumps({"label": label, "total": total, "element": element}))
        return element

    with TestPipeline() as p:
        locked = p | "Lock" >> LockOutput(str(out), me, {"retries": 1})
        total = (p | "Values" >> beam.Create([1, 2, 3])
                 | "Sum" >> beam.CombineGlobally(sum)
                 | "AfterLock" >> beam.Map(lambda t, _l: t, beam.pvalue.AsSingleton(locked)))
        released = p | "Finalize" >> FinalizeOutput(str(out), me, finalize, total=beam.pvalue.AsSingleton(total),
                                                   label="night")
        assert_that(released, equal_to([True]))
    assert json.loads((out / "_SUCCESS").read_text()) == {"label": "night", "total": 6, "element": None}
    assert os.listdir(out / "_LOCK") == []
    # A PCollection start: finalize gets each element; someone else's lock stays.
    other = new_lock_info("curate", run_id="other")
    (out / "_LOCK" / f"{other['attempt']}.json").write_text("{}")
    with TestPipeline() as p:
        released = (p | beam.Create(["a"])
                    | FinalizeOutput(str(out), me, lambda e: e))
        assert_that(released, equal_to([False]))
    assert os.listdir(out / "_LOCK") == [f"{other['attempt']}.json"]


def test_a_file_is_never_written_over_a_folder(tmp_path):
    """write_atomically deleted whatever stood at its path before the rename,
    and Beam deletes a local folder whole: a file path naming a folder took
    the folder with it."""
    from transforms.io.sharded_write import write_atomically
    folder = tmp_path / "kept"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a")
    with pytest.raises(IsADirectoryError, match="is a folder: not replaced by a file"):
        write_atomically(str(folder), b"data")
    assert (folder / "sub" / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]   # no temp file left either
    write_atomically(str(tmp_path / "f.json"), b"1")
    write_atomically(str(tmp_path / "f.json"), b"2")   # a file is replaced as before
    assert (tmp_path / "f.json").read_bytes() == b"2"
