"""Entry point of one load worker process: ``python worker.py '<json args>'``.

See `reliability.load.worker_main`; started by `reliability.load.run_load`.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reliability.load import worker_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(worker_main(json.loads(sys.argv[1])))
