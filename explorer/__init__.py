"""IPS Explorer: intra-class patch swap self-distillation, its peers, and a web app to see them work."""

__version__ = "0.1.0"
