"""Meta reward models: a scalar per sampled judgement, to keep the best k_meta for voting.

`make_meta_rm(name, ...)` builds one by name: `agreement` (a model-free heuristic), `llm`
(P("Yes") from a generation backend), `http` (a served scalar reward model). May import the
core and the backends, nothing above them.
"""

from grm.metarm.factory import META_RMS, make_meta_rm

__all__ = ["META_RMS", "make_meta_rm"]
