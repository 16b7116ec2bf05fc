"""The exception types tokenmill raises for problems a user can fix."""


class TokenmillError(Exception):
    """Base class: a problem with a clear cause and fix; printed without a traceback by the CLI."""


class PluginError(TokenmillError):
    """No usable plugin, a broken plugin, a plugin for another contract, or a name clash."""


class ModelLoadError(TokenmillError):
    """A model file or directory that cannot be loaded as asked."""


class RequestError(TokenmillError, ValueError):
    """A request the engine refuses (bad sampling value, empty or too-long prompt)."""


class EngineDeadError(TokenmillError):
    """The engine can no longer step (e.g. a tensor-parallel worker died); every request fails, restart it."""
