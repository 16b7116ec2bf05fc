"""Hook implementations of the ROCm plugin; a skeleton that only describes its platform for now."""

from tokenmill.hookspecs import hookimpl
from tokenmill_rocm.platform import RocmPlatform


@hookimpl
def tokenmill_platform() -> RocmPlatform:
    """The ROCm platform; its is_available() explains what this machine lacks."""
    return RocmPlatform()
