"""The garbage collector in a long-running agent.

Start-up leaves some 400,000 objects that live as long as the process (modules, ccxt's endpoint tables,
pydantic's and SQLAlchemy's caches, the agent's parts). Python's full collections walk every one of them
(about 170 ms here, a pause in the middle of a decision cycle) although none will ever be garbage.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect what start-up left behind, then move every surviving object out of the collector's reach
    (`gc.freeze`): later collections only walk what was made after. Call once, in the process that serves,
    after the agent is built; not in tests, which build many agents in one process."""
    gc.collect()
    gc.freeze()
