"""What the app computes, free of Gradio: pairs, evidence, comparisons, CAMs, figures, uploads, endpoint payloads."""
