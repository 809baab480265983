"""Where labctl's own files are: the project tree with playbooks/, roles/, workloads/ …"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The labctl project directory (``LABCTL_PROJECT_DIR`` overrides, for installed copies)."""
    env = os.environ.get("LABCTL_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[1]
