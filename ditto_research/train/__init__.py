"""Training the motion model (LMDM). Today: the objective (:mod:`ditto_research.train.objective`), the
released training code's ``p_losses`` term for term; its data are :mod:`ditto_research.data`'s windows."""

from ditto_research.train.objective import (
    DEFAULT_PARTS,
    LossPart,
    Objective,
    StepLoss,
    motion_loss_terms,
    q_sample,
)

__all__ = ["DEFAULT_PARTS", "LossPart", "Objective", "StepLoss", "motion_loss_terms", "q_sample"]
