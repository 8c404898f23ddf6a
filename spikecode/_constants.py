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

#: The integrator nodes a NIR graph can use; the first is the default (here so that the
#: CLI's option choices need not import NIR).
NIR_INTEGRATORS: tuple[str, ...] = ("IF", "I")
#: The weight forms of a NIR graph; the first is the default.
NIR_WEIGHTS: tuple[str, ...] = ("int", "float")
