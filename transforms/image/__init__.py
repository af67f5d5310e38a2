"""Pure per-image functions (header, decode, colour, quality, skin tone, hashes, relevance, verdict, model input): numpy/OpenCV/Pillow and schemas only, no Beam, no other transforms subpackage."""
