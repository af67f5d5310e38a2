"""ScoreImages: image references -> one prediction row each (score's middle).

Prepare (one decode, curate's quality gate, the training path's crop, resize,
JPEG and decode) -> batched RunInference with the model loaded once per
process -> rows (schemas/predictions.py). Images the gate skips, images that
fail to prepare and batches the model raised on come out as their final rows
too, so every input is accounted for.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from transforms.scoring.inference import KerasBundleHandler
from transforms.scoring.prepare_images import DONE, PrepareImages
from transforms.scoring.rows import failed_batch_rows, scored_row


class ScoreImages(beam.PTransform):
    """Score image refs with one model bundle; one row per ref, whatever happens to it.

    settings: the model's image settings (schemas.model_bundle.image_settings);
    gate: apply the quality policy before inference; allowed: the roots images
    may be read from; batch sizes and share_model tune RunInference;
    enhance: images the gate rejects only for fixable reasons get curate's
    enhancement recipe and are scored if it rescues them (needs gate).
    """

    def __init__(self, model_uri: str, vocabulary: list[str], version: str, scored_at, *, policy, settings: dict,
                 gate: bool, allowed, top_k: int, min_batch_size: int, max_batch_size: int,
                 share_model: bool, prepare_threads: int, enhance: bool = False, model_sha256: str | None = None):
        super().__init__()
        self._model_uri, self._vocabulary, self._version, self._scored_at = model_uri, vocabulary, version, scored_at
        self._policy, self._settings, self._gate, self._allowed = policy, settings, gate, allowed
        self._top_k, self._share_model, self._threads = top_k, share_model, prepare_threads
        self._min_batch, self._max_batch = min_batch_size, max_batch_size
        self._enhance, self._model_sha256 = enhance, model_sha256

    def expand(self, images):
        prepared = images | "Prepare" >> beam.ParDo(PrepareImages(
            self._policy, self._settings, self._gate, self._version, self._scored_at, self._allowed,
            threads=self._threads, depth=2 * self._max_batch, enhance=self._enhance)).with_outputs(DONE, main="inputs")
        handler = KeyedModelHandler(KerasBundleHandler(
            self._model_uri, min_batch_size=self._min_batch, max_batch_size=self._max_batch,
            share_across_processes=self._share_model, image_size=self._settings["image_size"],
            version=self._version, model_sha256=self._model_sha256))
        predictions, failures = prepared.inputs | "RunInference" >> RunInference(handler).with_exception_handling()
        scored = predictions | "ToRows" >> beam.Map(scored_row, self._vocabulary, self._top_k, self._version,
                                                    self._scored_at)
        failed = failures.failed_inferences | "FailedBatches" >> beam.FlatMap(
            failed_batch_rows, self._version, self._scored_at)
        return (scored, failed, prepared[DONE]) | "AllRows" >> beam.Flatten()
