"""Video self-supervision: clip sources, colour clusters, attention and mask propagation, the video run."""
