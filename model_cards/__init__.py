"""Model card templates (Jinja, rendered by ``huggingface_hub.ModelCard.from_template``).

Shipped as package data so a pip-installed scaled_ql renders the same cards.
"""

from importlib.resources import files


def template_path(name: str = "q_network.md") -> str:
    return str(files(__name__) / name)
