"""The worker side of a step: turning scheduled requests into tensors and running the model."""
