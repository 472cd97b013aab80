"""Training: the shared fit path, schedules, checkpoints and resume, distribution strategies."""
