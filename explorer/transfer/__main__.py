"""``python -m explorer.transfer``: see ``explorer.transfer.loop``."""

import sys

from explorer.transfer.loop import main

if __name__ == "__main__":
    sys.exit(main())
