"""Offline data: the on-disk dataset format, the memory-mapped store and the sampler.

Nothing here imports models, losses or the trainer.
"""
