"""Stand-in for habana_frameworks.torch.distributed.hccl: HCCL maps to torch's gloo backend."""

BACKEND = "gloo"  # the torch.distributed backend the stub plugin uses where a Gaudi uses "hccl"
