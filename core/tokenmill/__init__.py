"""tokenmill: an LLM inference engine whose hardware support is a set of pluggy plugins."""

__version__ = "0.1.0"
