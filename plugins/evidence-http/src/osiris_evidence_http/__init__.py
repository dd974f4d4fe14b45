"""An evidence sink that uploads signed bundles and checkpoints to the
central service over HTTPS, with an idempotency key per item."""
