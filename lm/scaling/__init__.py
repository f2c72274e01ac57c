"""Scaling laws: FLOP accounting, IsoFLOP profiles (Approach 2), the parametric
loss L(N, D) (Approach 3) of Hoffmann et al. (2022), sweep planning and plots.

Everything here is NumPy/SciPy; nothing imports JAX, so fits run anywhere.
"""

from lm.scaling.data import Runs
from lm.scaling.flops import FlopCount, count_flops, flops_6nd, scaling_params, tokens_for_budget
from lm.scaling.isoflop import IsoFlopFit, IsoFlopProfile, fit_isoflop, fit_profile
from lm.scaling.parametric import ParametricConfig, ParametricFit, ParametricLaw, fit_parametric
from lm.scaling.prediction import Prediction
from lm.scaling.stats import Interval, PowerLaw, fit_power_law, percentile_interval

__all__ = [
    "FlopCount", "Interval", "IsoFlopFit", "IsoFlopProfile", "ParametricConfig", "ParametricFit", "ParametricLaw",
    "PowerLaw", "Prediction", "Runs", "count_flops", "fit_isoflop", "fit_parametric", "fit_power_law",
    "fit_profile", "flops_6nd", "percentile_interval", "scaling_params", "tokens_for_budget",
]
