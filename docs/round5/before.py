# ACC / ASR of the Fashion-MNIST models before purification.
from cases import ATTACKS, load_case, percent
for a in ATTACKS:
    for seed in (0, 1, 2):
        m, att, _, (xe, ye) = load_case(a, seed, "fashion-mnist")
        print(a, seed, "ACC/ASR", percent(m, xe, ye, att))
