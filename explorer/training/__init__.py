"""Training: the config and CLI, the method registry, the loop, the run folder, the run manager, studies, benchmarks."""
