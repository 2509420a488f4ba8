"""Input data: sources (tar shards, metafile + folder, ArrayRecord), the Grain pipeline, synthetic
RS data and the eval-set readers."""
