# ACC / ASR before purification: python before.py DATASET SEEDS > /tmp/r7/before_DATASET.log (agg.py reads it)
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import ATTACKS, load_case, percent
dataset, seeds = sys.argv[1], int(sys.argv[2])
for attack in ATTACKS:
    for seed in range(seeds):
        model, att, _, (x_eval, y_eval) = load_case(attack, seed, dataset)
        print(attack, seed, "ACC/ASR", percent(model, x_eval, y_eval, att), flush=True)
