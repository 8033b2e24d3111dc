# Improved mode beyond one shot: python shots.py SHOTS 'json list of overrides' attack:seed,... > log
# Purifies the cached Fashion-MNIST SmallCNN of each case (12,000 training images, docs/round5/cases.py) with SHOTS
# clean images per class under each override set, and prints ASR/ACC after on 2,000 held-out test images.
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import _split, load_case

import awm_fast
from awm_fast import study
from awm_fast.data import few_shot_subset, without_indices

shots, variants = int(sys.argv[1]), json.loads(sys.argv[2])
split = _split("fashion-mnist")
for case in sys.argv[3].split(","):
    name, seed = case.rsplit(":", 1)
    seed = int(seed)
    model, attack, _, _ = load_case(name, seed, "fashion-mnist")
    x, y, used = few_shot_subset(split.x_test, split.y_test, shots, seed=seed)
    x_eval, y_eval = without_indices(split.x_test, split.y_test, used)
    x_eval, y_eval = x_eval[:2000], y_eval[:2000]
    for overrides in variants:
        start = time.time()
        result = awm_fast.purify(model, (x, y), backend="torch", seed=seed, **overrides)
        seconds = time.time() - start
        met = study._metrics(result.model, x_eval, y_eval, attack)
        print(f"{case} shots={shots} {json.dumps(overrides, sort_keys=True)} ASR {100 * met['asr']:.1f} "
              f"ACC {100 * met['acc']:.1f} sec {seconds:.0f} steps {result.config.steps}", flush=True)
