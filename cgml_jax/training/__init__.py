"""Training infrastructure shared by every method: the outer loop, checkpoints, metric
writers, data parallelism, optimisers and workdir handling."""
