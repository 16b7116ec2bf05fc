"""The scheduler and the KV block manager work in plain integers: importing them loads no tensor library."""

import subprocess
import sys


def test_sched_and_kv_import_no_torch_or_numpy():
    code = (
        "import sys, tokenmill.sched, tokenmill.kv; "
        "loaded = sorted(m for m in ('torch', 'numpy') if m in sys.modules); "
        "print(','.join(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
