"""The naive baseline, shaped like the public aepp client: one file at a time, whole body in memory.

`python -m bench.naive_client LIST.json` where LIST.json is {"headers": {...}, "files": [{"url", "out"}]}.
No ranges, no retries, no verification: the first failure ends the run with exit 1.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        spec = json.load(f)
    headers = spec["headers"]
    for item in spec["files"]:
        req = urllib.request.Request(item["url"], headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                body = resp.read()  # the whole file in memory, like aepp's getFileContent
        except Exception as exc:  # noqa: BLE001 - a baseline just stops
            print(f"naive: {item['url']}: {exc}", file=sys.stderr)
            return 1
        os.makedirs(os.path.dirname(item["out"]), exist_ok=True)
        with open(item["out"], "wb") as out:
            out.write(body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
