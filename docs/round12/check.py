# Does the all-to-all check fire? python check.py MODEL ATTACK:SEED,...   One outer epoch of purify (the default
# config, one image per class) per cached Fashion-MNIST model: prints the suspect and the all_to_all flag.
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import fashion_case

import awm_fast

model_name = sys.argv[1]
for case in sys.argv[2].split(","):
    _, seed, model, _, few, _ = fashion_case(model_name, case)
    record = awm_fast.purify(model, few, seed=seed, outer=1).history[0]
    print(f"CHECK {model_name} {case} suspect {record['suspect_class']:.0f} all_to_all {record['all_to_all']:.0f}",
          flush=True)
