"""Benchmarks of scaled_ql, outside the package (they need the checkout: ``configs/``, ``git``,
``docs/``): speed of the update step, the sampler and the networks (``speed``), Parquet
conversion (``parquet``), the sampler's memory (``memory``), and the learning benchmark
(``learning_bench``, its report ``learning_report`` and its d3rlpy peer ``learning_peer``).

Run them as ``python -m benchmarks WHAT ...`` from the checkout's root, or ``scaled-ql bench WHAT ...``.
"""
