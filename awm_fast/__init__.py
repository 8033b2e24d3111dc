"""awm_fast: fast Adversarial Weight Masking (Chai & Chen, NeurIPS 2022) for PyTorch classifiers.

    import awm_fast
    result = awm_fast.purify(model, (x, y))     # a few clean labelled images, one per class suffices
    clean_model = result.model                   # same class, masks folded into the weights

See AWMConfig for every option, awm_fast.ops for the masked ops and the trigger step, and
awm_fast.attacks / awm_fast.metrics / awm_fast.data for the evaluation toolkit.
"""

from awm_fast import ops
from awm_fast.config import AWMConfig
from awm_fast.modules import MaskedConv2d, MaskedLinear
from awm_fast.purify import PurifyResult, purify

__version__ = "0.1.0"

__all__ = ["AWMConfig", "MaskedConv2d", "MaskedLinear", "PurifyResult", "__version__", "ops", "purify"]
