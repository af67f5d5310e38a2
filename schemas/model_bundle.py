"""The model-directory contract between a trainer and the scoring job.

    MODEL_DIR/model.keras        Keras 3 model: uint8 RGB (N, S, S, 3) -> softmax (N, len(vocab))
    MODEL_DIR/model_info.json    label_vocabulary (index = output unit), version, image_size,
                                 input, model_sha256, trained_on, metrics, ...

model_sha256 names the model.keras the info describes: a bundle is two files,
so a reader during a rewrite, or two trainers writing one directory, could
pair one run's weights with another's version and vocabulary; load_bundle()
refuses such a pair (bundles written before it carry no hash and load as before).

write_bundle() writes one, load_bundle() reads one back from a local path or gs://.
Remote files go through Beam's FileSystems, the project's one gs:// client
(TensorFlow's own GCS client would ignore STORAGE_EMULATOR_HOST, among others).
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import tempfile

MODEL_FILE = "model.keras"
INFO_FILE = "model_info.json"
# What the model expects: the exact arrays read_split()/the scorer decode, no
# further preprocessing outside the model (it rescales inside).
INPUT_CONTRACT = "uint8 RGB HxWx3, decoded by schemas.examples.decode_image from the make_tfrecords JPEG"
REQUIRED_KEYS = ("label_vocabulary", "version", "image_size", "input")


def image_settings(info: dict) -> dict:
    """How the bundle's model must see images: exactly as its training images
    were made (image_size, else trained_on.sources'; crop and JPEG quality from
    trained_on.sources; schemas.examples.IMAGE_DEFAULTS where a bundle is silent)."""
    from schemas.examples import IMAGE_DEFAULTS
    sources = (info.get("trained_on") or {}).get("sources") or {}
    return {"image_size": int(info.get("image_size") or sources.get("image_size") or IMAGE_DEFAULTS["image_size"]),
            "crop_fraction": float(sources.get("crop_fraction", IMAGE_DEFAULTS["crop_fraction"])),
            "jpeg_quality": int(sources.get("jpeg_quality", IMAGE_DEFAULTS["jpeg_quality"])),
            "crop": str(sources.get("crop", "center"))}


def _join(base: str, name: str) -> str:
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.join(base, name)


def _exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.exists(path)


def _read(path: str, what: str) -> bytes:
    """A bundle file's bytes, read as a named file is (only a regular file: a
    FIFO in a model folder hung score and evaluate); ValueError in one line."""
    from transforms.io.inputs import read_named_file
    return read_named_file(path, what)


def _write(path: str, data: bytes) -> None:
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.create(path, compression_type="uncompressed") as f:
        f.write(data)


def write_bundle(model_dir: str, model, info: dict) -> str:
    """Write model.keras and model_info.json into model_dir (local or gs://); returns model_dir.

    info must hold label_vocabulary, version and image_size; `input` defaults to
    INPUT_CONTRACT. The vocabulary length must match the model's output units.
    """
    info = {"input": INPUT_CONTRACT, **info}
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise ValueError(f"model info lacks {', '.join(missing)} for {model_dir}")
    _check_units(model, info["label_vocabulary"], model_dir)
    problem = version_problem(info["version"])
    if problem:
        raise ValueError(f"model {problem}: {model_dir}")
    if "://" not in model_dir:
        os.makedirs(model_dir, exist_ok=True)
    # Keras saves to local paths only: save locally, then copy.
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        with open(local, "rb") as f:
            data = f.read()
    info["model_sha256"] = hashlib.sha256(data).hexdigest()
    _write(_join(model_dir, MODEL_FILE), data)
    _write(_join(model_dir, INFO_FILE), (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return model_dir


def load_bundle(model_uri: str):
    """(keras_model, info) from a model directory or its model.keras file, local or gs://.

    Raises ValueError (one line, naming the path) when the directory, model.keras
    or a valid model_info.json is missing, or the vocabulary does not match the
    model's output units.
    """
    uri = str(model_uri).rstrip("/")
    if uri.endswith(".keras"):
        model_path = uri
        model_dir = posixpath.dirname(uri) if "://" in uri else os.path.dirname(uri) or "."
    else:
        model_dir = uri
        if "://" not in model_dir and not os.path.isdir(model_dir):
            raise ValueError(f"model directory not found: {model_dir}")
        model_path = _join(model_dir, MODEL_FILE)
    if not _exists(model_path):
        raise ValueError(f"model file not found: {model_path}")
    info_path = _join(model_dir, INFO_FILE)
    info = _read_info(info_path)
    model = _load_model(model_path, info.get("model_sha256"), info_path)
    _check_units(model, info["label_vocabulary"], model_path)
    return model, info


# A version names score's partitions (predictions/dt=D/model=VERSION/), whose
# files a run replaces: it must be one plain path component ("../../x" put a
# partition, and the deletion of its old files, outside the output).
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=@-]{0,127}")


def version_problem(version) -> str | None:
    """Why `version` cannot name a model (None if it can)."""
    if isinstance(version, str) and VERSION_RE.fullmatch(version):
        return None
    return (f"version {version!r} must be 1-128 letters, digits and _.+=@-, starting with a letter or digit "
            f"(it names score's model= partitions)")


def _read_info(info_path: str) -> dict:
    if not _exists(info_path):
        raise ValueError(f"model info not found: {info_path}")
    try:
        info = json.loads(_read(info_path, "model info"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"model info is not valid JSON ({e.msg if hasattr(e, 'msg') else e}): {info_path}") from None
    if not isinstance(info, dict):
        raise ValueError(f"model info is not a JSON object: {info_path}")
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise ValueError(f"model info lacks {', '.join(missing)}: {info_path}")
    vocab = info["label_vocabulary"]
    if not isinstance(vocab, list) or not vocab or not all(isinstance(v, str) for v in vocab):
        raise ValueError(f"model info label_vocabulary is not a non-empty list of strings: {info_path}")
    problem = version_problem(info["version"]) or _settings_problem(info)
    if problem:
        raise ValueError(f"model info {problem}: {info_path}")
    return info


def _settings_problem(info: dict) -> str | None:
    """Why the image settings a bundle declares cannot be served (None if
    they can): a wrong type was a traceback at launch, a crop_fraction of 0
    or nan failed every image of a night that was then marked complete."""
    from transforms.image.skin_crop import CROPS
    trained = info.get("trained_on")
    if trained is not None and not isinstance(trained, dict):
        return "trained_on is not a JSON object"
    if not isinstance((trained or {}).get("sources", {}), dict):
        return "trained_on.sources is not a JSON object"
    sha = info.get("model_sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        return f"model_sha256 {sha!r} is not a sha256 hex digest"
    try:
        s = image_settings(info)
    except (TypeError, ValueError) as e:
        return f"image settings cannot be read ({e})"
    if not 8 <= s["image_size"] <= 4096:
        return f"image_size {s['image_size']} is not within [8, 4096]"
    if not 0.1 <= s["crop_fraction"] <= 1:
        return f"crop_fraction {s['crop_fraction']} is not within [0.1, 1]"
    if not 1 <= s["jpeg_quality"] <= 100:
        return f"jpeg_quality {s['jpeg_quality']} is not within [1, 100]"
    if s["crop"] not in CROPS:
        return f"crop {s['crop']!r} is not one of {', '.join(CROPS)}"
    return None


def _load_model(model_path: str, sha256: str | None = None, info_path: str = INFO_FILE):
    """The Keras model of model_path; with `sha256`, only if its bytes are
    those (else ValueError naming both files)."""
    # Keras 3 by name, not tf.keras: importing tensorflow_transform sets
    # TF_USE_LEGACY_KERAS=1 (inherited by child processes), which turns
    # tf.keras into Keras 2, and Keras 2 cannot read a Keras 3 .keras file.
    import keras
    import tensorflow as tf
    try:
        # Keras cannot open gs:// itself, the bytes checked must be the bytes
        # loaded, and a FIFO must not be opened: read them once, load a private copy.
        data = _read(model_path, "model file")
        got = hashlib.sha256(data).hexdigest() if sha256 is not None else None
        if got == sha256:
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, MODEL_FILE)
                with open(local, "wb") as f:
                    f.write(data)
                return keras.models.load_model(local)
    except (OSError, ValueError, tf.errors.OpError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load Keras model ({first}): {model_path}") from None
    raise ValueError(f"{model_path} is not the model {info_path} describes (sha256 {got[:12]}, not "
                     f"{sha256[:12]}): the bundle is being rewritten, or its files come from two runs")


def _check_units(model, vocab, where: str):
    units = model.output_shape[-1]
    if units != len(vocab):
        raise ValueError(f"label_vocabulary has {len(vocab)} classes but the model outputs "
                         f"{units} units: {where}")
