"""dataset_info.json's content (schemas/examples.py DATASET_INFO): counts by split,
class and Monk group, shards, vocabulary, class weights. Pure."""
from __future__ import annotations

from collections import Counter, defaultdict

from transforms.dataset.splits import SPLITS
from transforms.image.skin_tone import monk_group


def example_cell(example: dict) -> tuple:
    """(split, label, Monk group) an example counts in; "unknown" without a SCIN Monk label."""
    tone = example["monk_us"]
    return example["split"], example["label"], "unknown" if tone < 1 else monk_group(tone)


def _new_split() -> dict:
    return {"examples": 0, "shards": [], "by_class": Counter(), "by_monk_group": Counter(),
            "by_class_and_monk_group": defaultdict(Counter)}


def assemble_dataset_info(compression, vocab, class_counts, min_count, rare_policy, cells, shards,
                          dead_counts, sources) -> dict:
    """dataset_info.json but its "tfds" entry. cells: ((split, label, group), n);
    shards: (split, index, of, examples, path under OUT); dead_counts: (reason, n)."""
    splits = {s: _new_split() for s in SPLITS}  # the three always appear, even empty
    for (split, label, group), n in cells:
        s = splits.setdefault(split, _new_split())
        s["examples"] += n
        s["by_class"][label] += n
        s["by_monk_group"][group] += n
        s["by_class_and_monk_group"][label][group] += n
    for split, index, num, count, name in sorted(shards):
        splits[split]["shards"].append({"file": name, "index": index, "of": num, "examples": count})
    train = splits["train"]["by_class"]
    n_train, n_classes = sum(train.values()), max(1, len(train))
    return {
        "compression": compression,
        "label_vocabulary": vocab,
        "class_weights": {c: round(n_train / (n_classes * train[c]), 6) for c in sorted(train)},
        "rare_classes": {"min_class_count": min_count, "policy": rare_policy,
                         "classes": {c: n for c, n in sorted(class_counts.items()) if n < min_count}},
        "missing_from": {s: sorted(set(train) - set(splits[s]["by_class"])) for s in ("validation", "test")},
        "dead_letters": dict(sorted(dead_counts)),
        "splits": {s: {"examples": v["examples"], "shards": v["shards"],
                       "by_class": dict(sorted(v["by_class"].items())),
                       "by_monk_group": dict(sorted(v["by_monk_group"].items())),
                       "by_class_and_monk_group": {c: dict(sorted(g.items()))
                                                   for c, g in sorted(v["by_class_and_monk_group"].items())}}
                   for s, v in splits.items()},
        "sources": sources,
    }
