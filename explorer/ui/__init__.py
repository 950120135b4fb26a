"""The Gradio web app: one module per tab (each builds its components and wires its events), assembled in
``explorer.ui.app.build_app``."""
