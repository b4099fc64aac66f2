"""ffnlab: measure what the feed-forward layer after attention does in a Transformer."""

__version__ = "0.1.0"
