"""Models for tests, demos and benchmarks: the tiny real Llama (:mod:`.tiny`) and random-weight shapes."""
