"""make_tfrecords' pieces: labels, the label join, leak-free splits, tf.Example building, tf.Transform preprocessing; may import image/, io/, curate.near_dups and schemas."""
