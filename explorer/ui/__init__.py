"""The Gradio web app: one module per tab (each builds its components and wires its events), assembled in app.py."""

from explorer.ui.app import build_app

__all__ = ["build_app"]
