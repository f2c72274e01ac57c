"""The one score-mask constant shared by the model's attention and the Pallas kernels.

It lives here, below both, so the kernels need nothing from `lm.model` (which imports them).
"""

MASK_VALUE = -1e30  # finite, so a fully masked row gives exp(0)/n (exp2 in the kernels), never inf - inf = NaN
