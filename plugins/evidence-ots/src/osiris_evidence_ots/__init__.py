"""OpenTimestamps anchoring of evidence checkpoints with the reference
``opentimestamps`` library."""
