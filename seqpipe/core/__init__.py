"""The torch-free core: recipes and their schema, the stage graph, the artifact cache."""

__version__ = "0.1.0"
