"""tf.Transform preprocessing_fn for training examples.

Analyzers (vocabularies, means and variances) are computed on the train split
only; the resulting transform_fn is applied unchanged to every split and saved
beside the data, so serving can apply exactly the same mapping.
"""
from __future__ import annotations

from schemas import examples as E


def preprocessing_fn(inputs):
    import tensorflow_transform as tft
    out = {k: inputs[k] for k in E.PASSTHROUGH_STR + E.PASSTHROUGH_INT + ("body_parts",)}
    out["label_id"] = tft.compute_and_apply_vocabulary(
        inputs["label"], vocab_filename=E.LABEL_VOCAB, default_value=E.UNKNOWN_ID)
    for k in E.CATEGORICAL:
        out[f"{k}_id"] = tft.compute_and_apply_vocabulary(
            inputs[k], vocab_filename=k, default_value=E.UNKNOWN_ID)
    for k in E.NUMERIC:
        out[f"{k}_z"] = tft.scale_to_z_score(inputs[k])
    return out
