"""Video self-supervision: clip sources, colour clusters, attention and mask propagation, and the plug-in
(`plugin.py`) through which the one trainer trains and evaluates video methods."""
