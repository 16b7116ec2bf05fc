"""Starts stack_sampler in every Python process of a server run when TOKENMILL_STACK_SAMPLES names a folder."""

import os
import sys

_folder = os.environ.get("TOKENMILL_STACK_SAMPLES")
if _folder:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import stack_sampler

    _role = "engine" if any("core_proc" in a for a in getattr(sys, "orig_argv", sys.argv)) else "api"
    stack_sampler.start(os.path.join(_folder, f"stacks-{_role}-{os.getpid()}.json"),
                        hz=float(os.environ.get("TOKENMILL_STACK_HZ", "100")))
    if _role == "engine":
        import step_timeline

        step_timeline.install(os.path.join(_folder, f"timeline-{os.getpid()}.json"))
