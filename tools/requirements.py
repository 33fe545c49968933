"""Print the Python requirements declared in pyproject.toml (runtime + dev), one per line.

The Makefile feeds this to pip so that pyproject.toml stays the single list of dependencies.
"""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml").read_text())["project"]
extras = project.get("optional-dependencies", {})
for req in [*project["dependencies"], *extras.get("dev", [])]:
    print(req)
