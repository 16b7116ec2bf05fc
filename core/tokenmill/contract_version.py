"""Contract versions: parsing "major.minor" and deciding whether a plugin's version can load."""

from __future__ import annotations

from tokenmill.interfaces import CONTRACT_VERSION

# Majors this core still loads, each with the newest minor it knows. Contract 1 plugins load
# because every contract-2 addition is optional (their name guards are simply never false).
SUPPORTED = {1: 0, 2: int(CONTRACT_VERSION.split(".")[1])}


def parse(version: object) -> tuple[int, int] | None:
    """1 -> (1, 0), "2.0" -> (2, 0), "2" -> (2, 0); None for anything else."""
    if isinstance(version, bool):
        return None
    if isinstance(version, int):
        return (version, 0)
    if not isinstance(version, str):
        return None
    parts = version.strip().split(".")
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        return None
    return (int(parts[0]), int(parts[1]) if len(parts) == 2 else 0)


def refusal(version: object, plugin: str) -> str | None:
    """Why a plugin built for `version` cannot load here, naming both versions and the fix; None if it can."""
    parsed = parse(version)
    speaks = f"this tokenmill speaks contract {CONTRACT_VERSION} (and loads {_loads()})"
    if parsed is None:
        return (f"plugin {plugin} declares contract_version {version!r}, which is not a version; "
                f"{speaks}; set Platform.contract_version to \"{CONTRACT_VERSION}\"")
    major, minor = parsed
    if major not in SUPPORTED:
        fix = "upgrade tokenmill" if major > max(SUPPORTED) else "upgrade the plugin"
        return f"plugin {plugin} was built for contract {major}.{minor}, but {speaks}; {fix}"
    if minor > SUPPORTED[major]:
        return (f"plugin {plugin} was built for contract {major}.{minor}, newer than this tokenmill's "
                f"{major}.{SUPPORTED[major]}; {speaks}; upgrade tokenmill")
    return None


def _loads() -> str:
    return " and ".join(f"{major}.0" if not minor else f"{major}.0 to {major}.{minor}"
                        for major, minor in sorted(SUPPORTED.items()))
