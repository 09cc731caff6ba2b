"""Hugging Face Hub: model cards and publishing."""
