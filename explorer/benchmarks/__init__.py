"""Benchmarks, apart from the code they measure: ``training`` (a step of each method, ``python -m explorer.bench``),
``app`` (the web app's latency for one user and a class, ``python -m explorer.bench_app``) and ``streaming``
(streamed against in-memory data, ``python -m explorer.streaming_bench``)."""
