"""Runs the Triton kernel tests under TRITON_INTERPRET=1 on a host without a GPU.

The variable must be set before any @triton.jit decorator runs, that is before a tokenmill_triton
kernel module is imported by any test (the CUDA plugin's tests import them too, and run first), so
it lives in the root conftest, which loads before every test module. On a machine with CUDA the
same tests run compiled on the GPU instead.

Triton 3.6's interpreter holds a loaded scalar as a one-element 1-D numpy array and turns it into
a loop bound with int(array), which numpy >= 2.4 refuses; `_scalar_index` restores the old
behaviour for the interpreter only (compiled kernels never see it).

Triton is optional here: without it (a vendor running the conformance kit from a checkout, say)
nothing is set up, and only the Triton tests fail, at import, naming the missing module.
"""

import importlib.util
import os

import torch

if not torch.cuda.is_available() and importlib.util.find_spec("triton") is not None:
    os.environ["TRITON_INTERPRET"] = "1"
    from triton.runtime import interpreter

    _patch_lang_tensor = interpreter._patch_lang_tensor

    def _scalar_index(self):
        data = self.handle.data
        return int(data.reshape(-1)[0]) if data.size == 1 else int(data)

    def _patch_with_scalar_index(tensor, scope):
        _patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", _scalar_index)

    interpreter._patch_lang_tensor = _patch_with_scalar_index
