# Where improved mode's work goes on test_triton_purify's tiny model: model forwards and images forwarded per phase
# (the all-to-all check, the rest of the targeted search, everything else: the mask steps), with the torch backend
# and the searches' real step counts. Run from the repository root: python docs/round16/count_phases.py
import collections
import importlib
import sys

sys.path.insert(0, "tests")
import awm_fast  # noqa: E402
from awm_fast import search  # noqa: E402

from tiny_models import tiny_cnn, tiny_data  # noqa: E402

purify_module = importlib.import_module("awm_fast.purify")
phase = ["mask steps and the rest"]
forwards, images = collections.Counter(), collections.Counter()


def label_phase(owner, name, label):
    function = getattr(owner, name)

    def labelled(*args, **kwargs):
        previous, phase[0] = phase[0], label
        try:
            return function(*args, **kwargs)
        finally:
            phase[0] = previous

    setattr(owner, name, labelled)


label_phase(purify_module, "warp_suspect", "warp check")
label_phase(search.TargetedSearch, "recover", "naming search and hunt")
label_phase(search.TargetedSearch, "_check_all_to_all", "all-to-all check")


def count(module, inputs, output):
    forwards[phase[0]] += 1
    images[phase[0]] += inputs[0].shape[0]


model, (x, y) = tiny_cnn(), tiny_data()
model.register_forward_hook(count)  # purify's deep copy keeps the hook
awm_fast.purify(model, (x, y), backend="torch", mode="improved", mask_layers="conv+linear", outer=2, inner=2,
                batch_size=8, seed=5, augment_beyond_one_shot=False)
for name in forwards:
    print(f"{name}: {forwards[name]} forwards, {images[name]} images")
