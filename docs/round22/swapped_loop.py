"""Shared by round 22's probes: purify once with a subclass of AWMLoop swapped in, and print one JSON line."""
import json
import sys
import time
import warnings

from cases import percent

import awm_fast


def run_with_loop(loop_class, case, fields):
    """Purify case = (model_name, attack_name, seed, overrides, model, attack, few, (x_eval, y_eval)) with
    `loop_class` in place of purify's AWMLoop; print one JSON line: the case, `fields` (the probe's settings),
    ACC/ASR before and after, epochs, the last hunts, the masks' mean, warnings, the residual ratio, seconds."""
    model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case
    purify_module = sys.modules["awm_fast.purify"]  # the module (the package attribute is the function)
    purify_module.AWMLoop = loop_class
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = awm_fast.purify(model, few, seed=seed, **overrides)
    history = result.history
    print(json.dumps({"model": model_name, "case": f"{name}:{seed}", **fields, "overrides": overrides,
                      "before": percent(model, x_eval, y_eval, attack),
                      "after": percent(result.model, x_eval, y_eval, attack), "epochs": len(history),
                      "last_hunts": [round(record["ascent_loss"], 2) for record in history[-3:]],
                      "mask_mean": round(history[-1]["mask_mean"], 3), "warnings": len(caught),
                      "suspect_standout": history[-1].get("suspect_standout"),
                      "seconds": round(time.perf_counter() - start)}), flush=True)
