"""score's pieces: per-image preparation for the model (prepare, PrepareImages), RunInference over a model bundle, predictions rows, publishing partitions; may import image/, io/ and schemas."""
