"""Performance benchmarks of reconciler; `python -m bench` runs them all (see bench/RESULTS.md)."""
