"""CaCoVID's question-aware policy network and its inference-time budgeted selection."""

from cacovid.policy.config import PolicyConfig
from cacovid.policy.network import CaCoVIDPolicy, PolicyOutput, check_host_fits
from cacovid.policy.select import budgeted_select, frame_budgets, frame_shares
from cacovid.policy.selector import CaCoVIDSelector

__all__ = [
    "CaCoVIDPolicy",
    "CaCoVIDSelector",
    "PolicyConfig",
    "PolicyOutput",
    "budgeted_select",
    "check_host_fits",
    "frame_budgets",
    "frame_shares",
]
