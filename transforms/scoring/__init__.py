"""score's pieces: per-image preparation for the model and RunInference over a model bundle; may import image/, io/ and schemas."""
