"""train_baseline: a compact Keras CNN on make_tfrecords output -> a model bundle.

    DIR/dataset_info.json + train/validation shards (read with schemas.examples.read_split)
      -> small CNN (uint8 in, Rescaling inside, softmax out), class-weighted, seeded
      -> MODEL_DIR/model.keras + model_info.json (schemas.model_bundle)

Run: python -m beam_jobs.train_baseline --tfrecords DIR --output MODEL_DIR
         [--epochs 20] [--batch_size 32] [--seed 0] [--version V]

A baseline for the scoring job to load, not a clinical model: it runs on CPU in
about a minute on the demo dataset.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

from beam_jobs.cli import (JobFailed, OneLineParser, UsageError, check_not_another_jobs_output, main,
                           quiet_tensorflow, seed_arg)
from schemas import examples as E

# Decoded training images are cached in memory only below this size, so a
# large real dataset streams from the shards instead of exhausting RAM.
CACHE_LIMIT_BYTES = 1 << 30


CLASS_WEIGHTING = ("sqrt", "balanced", "none")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="train_baseline", description=__doc__.splitlines()[0])
    p.add_argument("--tfrecords", required=True, help="make_tfrecords output directory (local or gs://).")
    p.add_argument("--output", required=True, help="Model directory to write (local or gs://).")
    p.add_argument("--epochs", type=int, default=20, help="Training epochs.")
    p.add_argument("--batch_size", type=int, default=32, help="Batch size.")
    p.add_argument("--seed", type=seed_arg, default=0, help="Seed for weights, shuffling and augmentation.")
    p.add_argument("--learning_rate", type=float, default=3e-3,
                   help="Adam's initial learning rate (cosine-decayed to 0 over the run).")
    p.add_argument("--class_weighting", choices=CLASS_WEIGHTING, default="sqrt",
                   help="How dataset_info's balanced class weights are used: 'balanced' as they are, "
                        "'sqrt' their square root, 'none' all 1; then capped at --max_class_weight.")
    p.add_argument("--max_class_weight", type=float, default=3.0,
                   help="Cap on any class weight (a class of 2 images must not dominate the loss).")
    p.add_argument("--version", help="Model version (default baseline-<sha256[:8] of dataset_info.json and the "
                                     "training settings>-s<seed>: another dataset, seed, epoch count, batch size, "
                                     "learning rate or class weighting is another version).")
    from beam_jobs.options import LockOptions
    LockOptions._add_argparse_args(p)  # --run_id, --lock_ttl_hours, --break_lock, as every job
    return p


def _read_bytes(path: str) -> bytes | None:
    """The file's bytes, or None if absent (local paths without importing TensorFlow)."""
    if "://" not in path:
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()
    import tensorflow as tf
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def load_dataset_info(tfrecords: str) -> tuple[dict, bytes, str]:
    """(dataset_info, its raw bytes, the marker's stamp as read), or
    UsageError naming what is wrong."""
    from transforms.io import run_lock
    if "://" not in tfrecords and not os.path.isdir(tfrecords):
        raise UsageError(f"--tfrecords directory not found: {tfrecords}")
    stamp = run_lock.finished_stamp(tfrecords)  # before anything of it is read
    path = f"{tfrecords.rstrip('/')}/{E.DATASET_INFO}"
    raw = _read_bytes(path)
    if raw is None:
        raise UsageError(f"no {E.DATASET_INFO} in {tfrecords} (not a make_tfrecords output?)")
    try:
        info = E.parse_dataset_info(raw, path)
        vocab, train = info["label_vocabulary"], info["splits"]["train"]
    except ValueError as e:
        raise UsageError(str(e)) from None
    except (KeyError, TypeError) as e:
        raise UsageError(f"invalid {E.DATASET_INFO} ({type(e).__name__}: {e}): {path}") from None
    if not vocab or not train.get("examples") or not train.get("shards"):
        raise UsageError(f"the train split is empty in {path}")
    if not isinstance((info.get("sources") or {}).get("image_size"), int):
        raise UsageError(f"dataset_info.json has no sources.image_size: {path}")
    if stamp is None:  # a killed or running make_tfrecords: its shards may not be the ones listed
        raise UsageError(f"--tfrecords {tfrecords}: no {run_lock.MARKER}; make_tfrecords has not finished there")
    return info, raw, stamp


def default_version(info_bytes: bytes, seed: int, settings: dict) -> str:
    """Deterministic version: the same dataset_info.json, seed and training
    `settings` (epochs, batch size, learning rate, class weighting) give the
    same string, and so the same model. Without the settings, a 1-epoch model
    took the 30-epoch one's version, and score skipped the nights that version
    had scored."""
    digest = hashlib.sha256(info_bytes + json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return f"baseline-{digest[:8]}-s{seed}"


def training_settings(o) -> dict:
    """What, beside the data and the seed, decides the weights (part of the default version)."""
    return {"epochs": o.epochs, "batch_size": o.batch_size, "learning_rate": o.learning_rate,
            "class_weighting": o.class_weighting, "max_class_weight": o.max_class_weight}


def class_weights(vocab: list[str], balanced: dict, weighting: str, cap: float) -> dict[int, float]:
    """Output-unit index -> loss weight from make_tfrecords' balanced weights
    (n_train / (n_classes * n_class)): as they are, square-rooted or all 1, then capped."""
    out = {}
    for i, c in enumerate(vocab):
        w = float(balanced.get(c, 1.0)) if weighting != "none" else 1.0
        out[i] = round(min(w ** 0.5 if weighting == "sqrt" else w, cap), 6)
    return out


def build_model(image_size: int, n_classes: int):
    """uint8 (N, S, S, 3) -> softmax (N, n_classes); rescaling and per-image
    standardisation are inside, so the scorer feeds exactly the decoded arrays."""
    import keras
    L = keras.layers
    x = inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = L.Rescaling(1.0 / 255)(x)
    # Each image to zero mean and unit variance per channel: what is left is
    # the lesion's contrast with the skin around it, not the skin tone, the
    # exposure or the white balance, which say nothing about the condition.
    x = L.LayerNormalization(axis=(1, 2), center=False, scale=False, epsilon=1e-3, name="standardise")(x)
    widths = (16, 32, 64, 128)
    for i, width in enumerate(widths):
        # The first conv strides by 2: 224 px on 2 CPU cores must stay cheap;
        # four blocks see ~70 px of the input, a whole lesion at 128 px.
        x = L.Conv2D(width, 3, strides=2 if i == 0 else 1, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.9)(x)  # few steps per run: the moving statistics must settle
        x = L.ReLU()(x)
        if i < len(widths) - 1:
            x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.3)(x)
    outputs = L.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="skin_baseline")


def _known_label(features, label_id):
    # label_id -1: a validation/test class unseen in train; the model has no unit for it.
    return label_id >= 0


def _image_and_label(features, label_id):
    return features["image"], label_id


def _flip(image, label_id):
    import tensorflow as tf
    # Light augmentation only, and only in training: skin photos have no canonical orientation.
    return tf.image.random_flip_up_down(tf.image.random_flip_left_right(image)), label_id


def _labelled(ds):
    return ds.filter(_known_label).map(_image_and_label)


def _count(ds) -> int:
    return int(ds.reduce(0, _count_one))


def _count_one(n, _):
    return n + 1


def _pipelines(tfrecords: str, info: dict, batch_size: int, seed: int):
    """(train, validation, n_train, n_val, n_val_unknown) tf.data pipelines."""
    import tensorflow as tf
    from schemas.examples import read_split
    size = int(info["sources"]["image_size"])
    n_train = int(info["splits"]["train"]["examples"])
    # Every train label is in the vocabulary (built on train), so the filter keeps
    # all n_train; stating the count lets Keras know the epoch length.
    train = _labelled(read_split(tfrecords, "train")).apply(tf.data.experimental.assert_cardinality(n_train))
    if n_train * size * size * 3 <= CACHE_LIMIT_BYTES:
        train = train.cache()  # decode JPEGs once, not every epoch
    train = (train.shuffle(min(n_train, 4096), seed=seed, reshuffle_each_iteration=True)
             .map(_flip)  # sequential: parallel calls would draw the seeded flips in racy order
             .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    val_split = info["splits"].get("validation") or {}
    n_val = n_val_unknown = 0
    val = None
    if val_split.get("shards"):
        raw = read_split(tfrecords, "validation")
        val = _labelled(raw).cache()
        n_all, n_val = _count(raw), _count(val)
        n_val_unknown = n_all - n_val
        val = val.apply(tf.data.experimental.assert_cardinality(n_val)).batch(batch_size) if n_val else None
    return train, val, n_train, n_val, n_val_unknown


def _progress_callback(epochs: int):
    import keras

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            parts = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items())
                             if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
            print(f"train_baseline: epoch {epoch + 1}/{epochs} {parts} ({time.monotonic() - self.t0:.1f}s)",
                  file=sys.stderr, flush=True)

    return Progress()


def check_converged(losses: list, weights: list) -> None:
    """JobFailed unless every epoch's loss and every weight is finite: a
    learning rate too large for the data sent the loss to nan and the run
    still wrote the model (nan weights, every prediction the same class) as
    if it had trained."""
    bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
    if bad is not None:
        raise JobFailed(f"training diverged: the loss was {losses[bad]} at epoch {bad + 1}; no model written "
                        "(try a smaller --learning_rate)")
    if not all(np.isfinite(w).all() for w in weights):
        raise JobFailed("training diverged: the model's weights are not all finite; no model written "
                        "(try a smaller --learning_rate)")


def run(argv=None) -> dict:
    """Train the baseline and write the bundle; returns {"model_dir", "model_file", "version", "metrics"}."""
    o = _parser().parse_args(argv)
    if o.epochs < 1 or o.batch_size < 1:
        raise UsageError("--epochs and --batch_size must be at least 1")
    if not 0 < o.learning_rate < float("inf") or not o.max_class_weight >= 1:
        raise UsageError("--learning_rate must be a finite number > 0 and --max_class_weight at least 1")
    from schemas.model_bundle import version_problem
    problem = version_problem(o.version) if o.version is not None else None
    if problem:
        raise UsageError(f"--{problem}")
    from beam_jobs.options import lock_options
    lock = lock_options(o)
    info, info_bytes, stamp = load_dataset_info(o.tfrecords)
    check_not_another_jobs_output(o.output, "train_baseline")
    # A bundle is two files: two runs into one folder at once would pair one
    # run's weights with the other's info. One run at a time, as every job.
    from apache_beam.io.filesystems import FileSystems

    from transforms.io import run_lock
    me, lock_dir = run_lock.new_lock_info("train_baseline", o.run_id), FileSystems.join(o.output, run_lock.LOCK)
    run_lock.acquire(lock_dir, me, o.output, lock["ttl_hours"], lock["break_lock"])
    quiet_tensorflow()
    import tensorflow as tf
    try:
        result = _train(o, info, info_bytes, lambda: _still_mine(lock_dir, me, o, stamp))
    except tf.errors.DataLossError:  # tf.data's reader: a truncated or corrupt shard, a 28-line traceback
        run_lock.release_quietly(lock_dir, me)
        raise JobFailed(f"--tfrecords {o.tfrecords}: a shard is truncated or corrupt (DataLossError); "
                        "no model was written: rerun make_tfrecords there") from None
    except BaseException:
        run_lock.release_quietly(lock_dir, me)
        raise
    run_lock.release(lock_dir, me, o.output)
    return result


def _still_mine(lock_dir: str, me: dict, o, stamp: str) -> None:
    """Before the bundle is written: the lock is still this run's, and
    --tfrecords was not rewritten while it was read (a model trained on two
    runs' shards, or on shards that no longer match dataset_info.json)."""
    from transforms.io import run_lock
    run_lock.check(lock_dir, me, o.output)
    run_lock.check_unchanged({o.tfrecords: stamp}, "--tfrecords", "make_tfrecords", "train_baseline",
                             "the model may have learned from two datasets; no model was written")


def _train(o, info: dict, info_bytes: bytes, still_mine) -> dict:
    """run()'s training and writing, under the output's lock; still_mine()
    raises unless the lock is still this run's and its input unchanged
    (checked before writing)."""
    version = o.version or default_version(info_bytes, o.seed, training_settings(o))
    import keras  # run() has quieted TensorFlow before importing it
    import tensorflow as tf
    from schemas.model_bundle import INPUT_CONTRACT, MODEL_FILE, write_bundle
    keras.utils.set_random_seed(o.seed)
    vocab = list(info["label_vocabulary"])
    size = int(info["sources"]["image_size"])
    train, val, n_train, n_val, n_unknown = _pipelines(o.tfrecords, info, o.batch_size, o.seed)
    if n_val == 0:
        print("train_baseline: validation split has no examples with a train label; "
              "no validation metrics", file=sys.stderr)
    # Keys of class_weights are class names; Keras wants output-unit indices.
    class_weight = class_weights(vocab, info.get("class_weights") or {}, o.class_weighting, o.max_class_weight)

    model = build_model(size, len(vocab))
    # Decaying to 0 makes the last epochs small steps: the saved model is not
    # whichever side of a noisy minimum the final batches happened to push it.
    steps = o.epochs * -(-n_train // o.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(o.learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t0 = time.monotonic()
    hist = model.fit(train, validation_data=val, epochs=o.epochs, class_weight=class_weight,
                     callbacks=[_progress_callback(o.epochs), keras.callbacks.TerminateOnNaN()],
                     shuffle=False, verbose=0)
    seconds = time.monotonic() - t0
    check_converged(hist.history["loss"], model.get_weights())

    metrics = {"train_examples": n_train, "train_loss": float(hist.history["loss"][-1]),
               "train_accuracy": float(hist.history["accuracy"][-1]), "epochs": o.epochs,
               "train_seconds": round(seconds, 1), "validation_examples": n_val,
               "validation_skipped_unknown_label": n_unknown,
               "validation_loss": None, "validation_accuracy": None}
    if val is not None:
        loss, acc = model.evaluate(val, verbose=0)
        metrics.update(validation_loss=float(loss), validation_accuracy=float(acc))
    still_mine()
    write_bundle(o.output, model, {
        "label_vocabulary": vocab, "version": version, "image_size": size, "input": INPUT_CONTRACT,
        "trained_on": {"dataset": o.tfrecords, "sources": info.get("sources", {}),
                       "dataset_info_sha256": hashlib.sha256(info_bytes).hexdigest()},
        "metrics": metrics,
        "training": {"seed": o.seed, **training_settings(o), "class_weights": class_weight,
                     "tensorflow": tf.__version__, "keras": keras.__version__},
    })
    acc = metrics["validation_accuracy"]
    print(f"train_baseline: done in {seconds:.0f}s, validation accuracy "
          f"{'n/a' if acc is None else f'{acc:.3f}'} on {n_val} examples; "
          f"model {version} in {o.output}", file=sys.stderr)
    return {"model_dir": o.output, "model_file": f"{o.output.rstrip('/')}/{MODEL_FILE}",
            "version": version, "metrics": metrics}


if __name__ == "__main__":
    sys.exit(main(run, prog="train_baseline"))
