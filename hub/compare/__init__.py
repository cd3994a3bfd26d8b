"""``optimhub compare``: train one small built-in model once per optimizer and show the
results side by side (final loss, state memory per parameter, step time, status).

    from optimhub.compare import compare
    result = compare(["apollo_adamw", "adamw_8bit", "lomo"], steps=200)
    for row in result.results:
        print(row.name, row.status, row.final_loss, row.state_bytes_per_param)

The model (:mod:`.model`, a tiny Llama-shaped LM built in code) and the data
(:mod:`.data`, a synthetic language generated here) need no download and no
transformers; every optimizer is built, scheduled and driven through the hub's public
API (:mod:`.lockstep`), with per-capability defaults (:mod:`.settings`). The table and
JSON come from :mod:`.report`, the PNG from :mod:`.plot` (matplotlib, imported only
there). Nothing here is imported by ``import optimhub``.
"""

from __future__ import annotations

from .results import Comparison, Problem, RunResult
from .runner import compare

__all__ = ["Comparison", "Problem", "RunResult", "compare"]
