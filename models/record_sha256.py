"""Record a rebuilt model file's sha256 in the manifest.json and NOTICE.md beside it (where they exist).

    python models/record_sha256.py ZOO_DIR SHA256

Run by the build scripts in models/ (standard library only, any python 3).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def record(zoo: Path, sha: str) -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", sha), f"not a sha256: {sha!r}"
    manifest = zoo / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        data["sha256"] = sha
        manifest.write_text(json.dumps(data, indent=2) + "\n")
        print(f"updated sha256 in {manifest}")
    notice = zoo / "NOTICE.md"
    if notice.is_file():
        text = re.sub(r"(?m)^(- sha256: `)[0-9a-f]{64}(`.*)$", rf"\g<1>{sha}\g<2>", notice.read_text())
        notice.write_text(text)
        print(f"updated sha256 in {notice}")


if __name__ == "__main__":
    record(Path(sys.argv[1]), sys.argv[2])
