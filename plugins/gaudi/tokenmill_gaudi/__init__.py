"""Hook implementations of the Intel Gaudi plugin; a skeleton that only describes its platform for now."""

from tokenmill.hookspecs import hookimpl
from tokenmill_gaudi.platform import GaudiPlatform


@hookimpl
def tokenmill_platform() -> GaudiPlatform:
    """The Gaudi platform; its is_available() explains what this machine lacks."""
    return GaudiPlatform()
