"""IPS Explorer web app: ``python app.py`` serves it on http://127.0.0.1:7860 (see --help).

The launcher lives in ``explorer/ui/cli.py`` (also installed as ``ips-explorer``); this file keeps the README's
one command working from a checkout.
"""

from explorer.ui.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
