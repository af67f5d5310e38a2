"""Dataflow Flex Template files: the image's entry point, the metadata generator,
scheduling examples. Not part of the package shipped to workers (setup.py)."""
