# The table of round 17's check rule from naming_probe.py's JSON lines: per model, the suspect, whether the
# all-to-all check fired, the suspect's reach (mean cross-entropy), the runner-up's, and their ratio (the rule
# skips the check when it is at least search.ALL_TO_ALL_STANDOUT):
#   python show_reach.py reach_runs.jsonl
# The all_to_all field is the verdict of the code at the time of each probe: the first six lines ran before the rule
# (the top-left target-5 model called all-to-all), the next ones under its first value, 10 (the checkerboard
# all-to-all seed 0 skipped at 10.2), the last line under 100 (that model again: the check fires).
import json
import sys

for path in sys.argv[1:]:
    with open(path) as handle:
        for line in handle:
            row = json.loads(line)
            reach = {int(cls): loss for cls, loss in row["reach"].items()}
            head = f"{row['model']:12s} {row['case']:55s} suspect {row['suspect']} all-to-all {row['all_to_all']!s:5s}"
            if not reach:
                print(f"{head} (suspect named by the warp check: no naming search)")
                continue
            suspect = reach[row["suspect"]]
            runner_up = min(loss for cls, loss in reach.items() if cls != row["suspect"])
            ratio = runner_up / max(suspect, 1e-12)
            print(f"{head} reach {suspect:.2e} runner-up {runner_up:.2e} ratio {ratio:.3g}")
