"""Entry point of the processes that get SIGKILLed.

``python kill_child.py --zygote``: a fork server (`reliability.kills.zygote_main`) that forks one
child per request line; ``python kill_child.py '<json args>'``: one child, without forking.
Started by `reliability.kills.Launcher`.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reliability.kills import child_main, zygote_main  # noqa: E402

if __name__ == "__main__":
    if sys.argv[1:] == ["--zygote"]:
        sys.exit(zygote_main())
    sys.exit(child_main(json.loads(sys.argv[1])))
