# knob_probe.py (or another probe script given first) with warp_copies' runner-up rule on the crops but without its
# warped images: purify's call of awm_fast.warp.warped_copies returns the kept images unchanged. Separates the two
# parts of warp_copies.
#   AWM_CACHE=DIR python docs/round28/no_warped_probe.py [SCRIPT.py] MODEL ATTACK:SEED ['json overrides']
import importlib
import os
import runpy
import sys

# The module, not the function awm_fast exports under the same name.
importlib.import_module("awm_fast.purify").warped_copies = lambda model, x, y, suspect, cfg: (x, y)
script = os.path.join(os.path.dirname(__file__), "..", "round21", "knob_probe.py")
if sys.argv[1].endswith(".py"):
    script = sys.argv.pop(1)
runpy.run_path(script, run_name="__main__")
