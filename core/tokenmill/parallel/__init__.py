"""Tensor parallelism: the model transform, the step broadcast, the worker loop and the executors."""
