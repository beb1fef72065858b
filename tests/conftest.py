"""Makes the suite-wide test kits in this folder importable (``import mlas_emulation``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
