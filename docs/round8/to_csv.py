# Append shots.py logs to /tmp/r5/results.csv under TAG (so docs/round7/agg.py can read them):
# python to_csv.py TAG LOG... (dataset fashion-mnist)
import re, sys
tag = sys.argv[1]
with open("/tmp/r5/results.csv", "a") as out:
    for path in sys.argv[2:]:
        for line in open(path):
            m = re.match(r"(\S+):(\d+) shots=\d+ .* ASR (\S+) ACC (\S+) sec (\S+)", line)
            if m:
                out.write(",".join([tag, "fashion-mnist", *m.groups()]) + "\n")
