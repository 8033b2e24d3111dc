# Does the label-consistent augmentation help beyond one shot? python augment_all.py attack:seed,... SHOTS STEPS
# Purifies with improved mode on SHOTS images per class, once as purify does it (no copies when SHOTS > 1) and
# once with purify's one-shot copies forced on (is_one_shot patched), at the same mask-step count STEPS.
# Its figures (EFFICACY.md Table R7-d readings) are those of commit 25d2b6d: since round 8 improved mode adds
# ceil(9 / k) copies per image at every shot count itself, so on later commits both runs get copies; measure the
# copy count with docs/round8/shots.py instead.
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import awm_fast
from awm_fast import study
from awm_fast.data import few_shot_subset, without_indices
from cases import _split, load_case
P = sys.modules["awm_fast.purify"]
shots, steps = int(sys.argv[2]), int(sys.argv[3])
split = _split("fashion-mnist")
for case in sys.argv[1].split(","):
    name, seed = case.rsplit(":", 1); seed = int(seed)
    model, attack, _, _ = load_case(name, seed, "fashion-mnist")
    x, y, used = few_shot_subset(split.x_test, split.y_test, shots, seed=seed)
    xe, ye = without_indices(split.x_test, split.y_test, used)
    xe, ye = xe[:2000], ye[:2000]
    for forced in (False, True):
        P.is_one_shot = (lambda y: True) if forced else awm_fast.inputs.is_one_shot
        r = awm_fast.purify(model, (x, y), backend="torch", seed=seed, steps=steps)
        met = study._metrics(r.model, xe, ye, attack)
        print(f"{case} shots {shots} copies {forced}: ASR {100 * met['asr']:.1f} ACC {100 * met['acc']:.1f}", flush=True)
