"""The one error type every checkpoint reader raises for a file it cannot read safely."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, truncated, crafted or not a checkpoint; the message names the file
    (and the tensor, where one is at fault). Nothing from the file was executed."""
