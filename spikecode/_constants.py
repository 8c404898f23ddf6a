"""Numbers the whole package agrees on, at the bottom of the import graph.

Every module that needs one of these imports it from here, so no two modules depend on
each other for a constant.
"""

#: Vth is clamped into [VTH_MIN, VTH_MAX], as the released code does (SPEC §2).
VTH_MIN = 1e-5
#: Upper end of the Vth clamp (SPEC §2).
VTH_MAX = 1e4
#: Input columns per weight scale in the released W8ASpike checkpoints (SPEC §4).
RELEASE_GROUP_SIZE = 128

#: The recipes (what is spiked), in the order the CLI lists them; the stats file names one.
#: Re-exported by :mod:`spikecode.nn.recipes`, which defines what each does.
RECIPES: tuple[str, ...] = ("all-linear", "release")
#: The default everywhere: SPEC §1 as written (and spikecode's behaviour before recipes).
DEFAULT_RECIPE = "all-linear"


def auto_group_size(in_features: int) -> int | None:
    """Scale groups for a layer (SPEC §4): 128 input columns, or one scale per row.

    128 where it divides ``in_features`` (every projection of the 7B release). Here, not in
    :mod:`spikecode.nn.functional` (which re-exports it), so that stats-file readers and
    the deployment plan use the one rule without importing torch.
    """
    return RELEASE_GROUP_SIZE if in_features % RELEASE_GROUP_SIZE == 0 else None


#: The integrator nodes a NIR graph can use, the first the default, and its weight forms:
#: copies of spikecode.exporters.nir.INTEGRATORS and WEIGHTS for the CLI's option choices,
#: which must not import NIR (tests/test_cli_light.py checks that the copies agree).
NIR_INTEGRATORS: tuple[str, ...] = ("IF", "LI")
NIR_WEIGHTS: tuple[str, ...] = ("int", "float")

#: Lanes of the one summation order of ``sum|x|`` (SPEC §2 conventions): lane ``j`` adds
#: the elements ``i ≡ j (mod SUM_LANES)`` of a row in float64, in order; the lanes are
#: then folded in halves (lane ``j`` += lane ``j + h`` for h = 32, 16, …, 1).
SUM_LANES = 64
