"""Hook implementations of the TPU plugin; a skeleton that only describes its platform for now."""

from tokenmill.hookspecs import hookimpl
from tokenmill_tpu.platform import TpuPlatform


@hookimpl
def tokenmill_platform() -> TpuPlatform:
    """The TPU platform; its is_available() explains what this machine lacks."""
    return TpuPlatform()
