"""An evidence sink that keeps signed bundles and checkpoints in a
write-once directory (the data partition, a NAS mount)."""
