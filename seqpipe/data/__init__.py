"""Dataset registry, downloads, text and audio datasets, batching."""
