# Where does a LeNet-5's BadNets backdoor live? Zero parts of the original model and measure ACC/ASR:
#   python where_probe.py MODEL ATTACK:SEED
# Parts: the first Linear's weights that read each row/column band of the last feature map, and each conv
# filter of the first two convolutions (one at a time, the five that cut ASR most are printed).
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import fashion_case, percent

model_name, case = sys.argv[1], sys.argv[2]
name, seed, model, attack, few, (x_eval, y_eval) = fashion_case(model_name, case)
print("original", percent(model, x_eval, y_eval, attack))
convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
first_name, first = linears[0]
channels = convs[-1][1].out_channels
side = int(round((first.in_features / channels) ** 0.5))
print(f"{first_name} reads {channels} x {side} x {side}")
for label, keep in (("last row", lambda r, c: r == side - 1), ("last column", lambda r, c: c == side - 1),
                    ("bottom-right 2x2", lambda r, c: r >= side - 2 and c >= side - 2),
                    ("bottom-right cell", lambda r, c: r == side - 1 and c == side - 1)):
    cut = torch.zeros(side, side, dtype=torch.bool)
    for r in range(side):
        for c in range(side):
            cut[r, c] = keep(r, c)
    saved = first.weight.detach().clone()
    with torch.no_grad():
        first.weight.view(first.out_features, channels, side, side)[:, :, cut] = 0
    print(f"{first_name} without {label}:", percent(model, x_eval, y_eval, attack))
    with torch.no_grad():
        first.weight.copy_(saved)
for conv_name, conv in convs:
    rows = []
    for channel in range(conv.out_channels):
        saved = conv.weight.detach().clone()
        with torch.no_grad():
            conv.weight[channel] = 0
        rows.append((percent(model, x_eval, y_eval, attack), channel))
        with torch.no_grad():
            conv.weight.copy_(saved)
    rows.sort(key=lambda row: float(row[0].split("/")[1]))
    print(conv_name, "filters zeroed one at a time, lowest ASR first:", rows[:5])
