"""urbansound: an experiment sweep orchestrator for audio classification on UrbanSound8K."""

__version__ = "0.1.0"
