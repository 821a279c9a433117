"""Load generation (petra-bench) and micro-benchmarks."""
