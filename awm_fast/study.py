"""The efficacy study: backdoor models, purify them with a few clean images, tabulate ACC/ASR before and after.

Grid: dataset × model × attack × shots (clean images per class) × method × seed. Each backdoored model
is trained once and cached (state_dict + nothing else) under --cache, so reruns and new methods are cheap.
Outputs under --out: results.csv (one row per run, appended as runs finish), results.md (every run, then
means over seeds with the bars of EFFICACY.md checked), and PNGs (recovered vs true trigger, mask-value
histograms per layer, ACC/ASR per outer epoch). Beside each row, the same architecture trained on the same images
without poisoning (one per dataset, model and seed, cached alike) gives the attack's success rate on a model that
never had the backdoor (`asr_clean_model`): a trigger also flips the images a clean classifier already finds
ambiguous, so that ASR is the reference for what a purifier leaves (a purified model can score below it: on
Fashion-MNIST WaNet, 1.7 after purify against 4.3; docs/EFFICACY.md, round 14). For AWM runs, `epochs` counts
the outer epochs that ran (extra_outer's and residual_outer's included), `suspect_standout` is the residual
check's last ratio (empty where it did not run), `trigger_window_share` how compact the first hunt's trigger was and
`feature_distill` the feature pull's weight in effect (feature_distill_gate; empty where the loop had no pull).

Methods (a spec each; overrides in brackets, comma-separated key=value, values parsed as Python literals):
    none                       the backdoored model itself
    awm-paper[outer=10]        awm_fast.purify(mode="paper", ...) with AWMConfig overrides
    awm-improved[steps=30]     awm_fast.purify(mode="improved", ...)
    ft[steps=200,lr=0.01]      awm_fast.baselines.fine_tune with FineTuneConfig overrides
    anp[steps=300]             awm_fast.baselines.anp with ANPConfig overrides

    python -m awm_fast.study --datasets digits --attacks badnets blend --shots 1 --methods awm-paper awm-improved ft anp
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import awm_fast
from awm_fast.attacks import ATTACKS, Attack, make_attack, parse_attack, train_backdoored
from awm_fast.baselines import anp, fine_tune
from awm_fast.data import few_shot_subset, load_dataset, without_indices
from awm_fast.metrics import attack_success_rate, clean_accuracy
from awm_fast.models import build_model

__all__ = ["CSV_COLUMNS", "StudySettings", "add_study_parser", "build_attack", "main", "parse_method",
           "run_study", "run_study_from_args"]

METHOD_KINDS = ("none", "awm-paper", "awm-improved", "ft", "anp")
CSV_COLUMNS = ("dataset", "model", "attack", "shots", "method", "seed", "n_clean", "acc_before", "asr_before",
               "acc_after", "asr_after", "acc_drop", "seconds", "train_seconds", "threads", "acc_clean_model",
               "asr_clean_model", "epochs", "suspect_standout", "trigger_window_share", "feature_distill")
BAR_ASR, BAR_DROP, BAR_SECONDS = 5.0, 5.0, 300.0  # ASR after <= 5%, ACC drop <= 5 points, <= 5 min


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """One study: the grid, where to cache and write, and the costs to spend.

    train_epochs: None = 30 on digits (1,257 images), 3 elsewhere. train_limit: train on the first N
    (shuffled) training images only. eval_limit: evaluate on at most N test images (after removing the
    purification images). history_limit: images for the per-epoch ACC/ASR of AWM (0 = no history).
    plots: "none" | "first" (first seed of each cell) | "all". clean_reference: also train (or load) the
    never-poisoned model of each dataset, model and seed and report its ACC and each attack's ASR on the same
    evaluation images (acc_clean_model, asr_clean_model; left empty when False).
    """

    datasets: tuple[str, ...] = ("digits",)
    models: tuple[str, ...] = ("small-cnn",)
    attacks: tuple[str, ...] = ("badnets",)
    shots: tuple[int, ...] = (1,)
    methods: tuple[str, ...] = ("none", "awm-paper", "awm-improved", "ft", "anp")
    seeds: tuple[int, ...] = (0,)
    rate: float = 0.1
    train_epochs: int | None = None
    train_limit: int | None = None
    eval_limit: int | None = None
    history_limit: int = 500
    out: str = "study_out"
    cache: str = ".awm_cache"
    backend: str = "torch"
    threads: int = 1
    plots: str = "first"
    data_root: str | None = None
    verbose: bool = True
    clean_reference: bool = True


def parse_method(spec: str) -> tuple[str, dict]:
    """'awm-improved[steps=30,alpha=0.5]' -> ('awm-improved', {'steps': 30, 'alpha': 0.5})."""
    match = re.fullmatch(r"\s*([a-z-]+)\s*(?:\[(.*)\])?\s*", spec)
    if not match or match.group(1) not in METHOD_KINDS:
        raise ValueError(f"unknown method {spec!r}; expected one of {METHOD_KINDS}, optionally with [key=value,...]")
    overrides = {}
    for item in filter(None, (part.strip() for part in (match.group(2) or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"method {spec!r}: override {item!r} is not key=value")
        try:
            overrides[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value.strip()  # a bare word, e.g. clean_loss=distill
    return match.group(1), overrides


def build_attack(spec: str, image_size: int, num_classes: int) -> Attack:
    """The study's attack for NAME[:key=value,...] (attacks.parse_attack): its defaults, then the overrides.

    Defaults: every attack's own target; patches shrink to 2 px on 8×8 digits and WaNet warps by 1 px there.
    all-to-all wraps BadNets unless base= says otherwise; its other overrides go to the base attack.
    """
    try:
        name, overrides = parse_attack(spec)
        defaults: dict = {}
        if name == "all-to-all":
            defaults.update(num_classes=num_classes, base="badnets")
        if name == "badnets" or overrides.get("base", defaults.get("base")) == "badnets":  # BadNets' patch size
            defaults["size"] = 2 if image_size <= 8 else 3
        if name == "wanet" and image_size <= 8:
            defaults["strength"] = 1.0  # 0.5 px of warp is nearly invisible on 8×8 and barely learnt
        return make_attack(name, **{**defaults, **overrides})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"attack {spec!r}: {exc}") from None


def true_trigger(attack: Attack, x: torch.Tensor) -> torch.Tensor:
    """The attack's mean perturbation attack.apply(x) - x over x [N, C, H, W]: [C, H, W]."""
    return (attack.apply(x) - x).mean(dim=0)


def _log(settings: StudySettings, message: str) -> None:
    if settings.verbose:
        print(f"[study] {message}", file=sys.stderr, flush=True)


def _clean_model(settings: StudySettings, split, dataset: str, model_name: str, seed: int) -> nn.Module:
    """The model for (dataset, model, seed) trained like the backdoored ones on the same images, none of them poisoned
    (cached as attack "clean" at rate 0)."""
    clean = dataclasses.replace(settings, rate=0.0)
    unused = build_attack("badnets", split.x_train.shape[-1], split.num_classes)  # rate 0 stamps nothing
    return _cached_model(clean, split, dataset, model_name, "clean", unused, seed)[0]


def _cached_model(settings: StudySettings, split, dataset: str, model_name: str, attack_name: str, attack: Attack,
                  seed: int) -> tuple[nn.Module, float]:
    """The backdoored model for (dataset, model, attack, seed), from the cache or trained now; (model, train s)."""
    epochs = settings.train_epochs or (30 if dataset == "digits" else 3)
    limit = settings.train_limit or "all"
    key = f"{dataset}_{model_name}_{_slug(attack_name)}_r{settings.rate}_e{epochs}_n{limit}_s{seed}"
    path = Path(settings.cache) / f"{key}.pt"
    torch.manual_seed(seed)
    model = build_model(model_name, split.x_train.shape[1], split.num_classes, split.x_train.shape[-1])
    if path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        return model.eval(), float(blob["train_seconds"])
    x, y = split.x_train, split.y_train
    if settings.train_limit:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: settings.train_limit]
        x, y = x[order], y[order]
    _log(settings, f"training {key} ({len(x)} images, {epochs} epochs)")
    start = time.perf_counter()
    train_backdoored(model, x, y, attack, rate=settings.rate, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "train_seconds": seconds}, path)
    return model.eval(), seconds


def _metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack) -> dict[str, float]:
    return {"acc": clean_accuracy(model, x, y), "asr": attack_success_rate(model, x, y, attack)}


def _run_method(spec: str, model: nn.Module, few: tuple[torch.Tensor, torch.Tensor], seed: int,
                settings: StudySettings, eval_fn):
    """(purified model, masks dict or None, trigger or None, history list)."""
    kind, overrides = parse_method(spec)
    if kind == "none":
        return model, None, None, []
    if kind in ("awm-paper", "awm-improved"):
        options = {"mode": kind.removeprefix("awm-"), "backend": settings.backend, "seed": seed, **overrides}
        result = awm_fast.purify(model, few, eval_fn=eval_fn, **options)
        return result.model, result.masks, result.trigger, result.history
    if kind == "ft":
        return fine_tune(model, few, seed=seed, **overrides), None, None, []
    purified, masks = anp(model, few, seed=seed, return_masks=True, **overrides)
    return purified, masks, None, []


def _run_facts(history: list[dict[str, float]]) -> dict[str, Any]:
    """What an AWM run's history says about how it ran: its outer epochs (with those extra_outer and residual_outer
    added), the residual check's last ratio, the first hunt's trigger_window_share and the feature pull's weight in
    effect; empty strings for the baselines and where the history does not hold them."""
    standout = history[-1].get("suspect_standout") if history else None
    first = history[0] if history else {}

    def rounded(value):
        return "" if value is None else round(value, 3)

    return {"epochs": len(history) if history else "", "suspect_standout": rounded(standout),
            "trigger_window_share": rounded(first.get("trigger_window_share")),
            "feature_distill": rounded(first.get("feature_distill"))}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


def run_study(settings: StudySettings) -> list[dict]:
    """Run the grid; write results.csv / results.md / PNGs under settings.out; return the rows."""
    for spec in settings.methods:
        parse_method(spec)  # fail before any training
    for spec in settings.attacks:
        build_attack(spec, 28, 10)  # names and keyword arguments, before any training
    if settings.plots not in ("none", "first", "all"):
        raise ValueError(f"plots must be none, first or all, got {settings.plots!r}")
    torch.set_num_threads(settings.threads)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    rows: list[dict] = []
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for dataset in settings.datasets:
            split = load_dataset(dataset, settings.data_root)
            image_size = split.x_train.shape[-1]
            for model_name in settings.models:
                clean_models = {}  # seed -> the never-poisoned model, when settings.clean_reference
                for attack_name in settings.attacks:
                    attack = build_attack(attack_name, image_size, split.num_classes)
                    for seed in settings.seeds:
                        backdoored, train_seconds = _cached_model(settings, split, dataset, model_name, attack_name,
                                                                  attack, seed)
                        for shots in settings.shots:
                            x_few, y_few, used = few_shot_subset(split.x_test, split.y_test, shots, seed=seed)
                            x_eval, y_eval = without_indices(split.x_test, split.y_test, used)
                            if settings.eval_limit:
                                x_eval, y_eval = x_eval[: settings.eval_limit], y_eval[: settings.eval_limit]
                            before = _metrics(backdoored, x_eval, y_eval, attack)
                            reference = {"acc_clean_model": "", "asr_clean_model": ""}
                            if settings.clean_reference:
                                if seed not in clean_models:
                                    clean_models[seed] = _clean_model(settings, split, dataset, model_name, seed)
                                clean = _metrics(clean_models[seed], x_eval, y_eval, attack)
                                reference = {"acc_clean_model": round(100 * clean["acc"], 2),
                                             "asr_clean_model": round(100 * clean["asr"], 2)}
                            x_hist, y_hist = x_eval[: settings.history_limit], y_eval[: settings.history_limit]

                            def eval_fn(masked, x_hist=x_hist, y_hist=y_hist, attack=attack):
                                return _metrics(masked, x_hist, y_hist, attack)

                            for spec in settings.methods:
                                start = time.perf_counter()
                                purified, masks, trigger, history = _run_method(
                                    spec, backdoored, (x_few, y_few), seed, settings,
                                    eval_fn if settings.history_limit else None)
                                seconds = time.perf_counter() - start
                                after = _metrics(purified, x_eval, y_eval, attack)
                                row = {"dataset": dataset, "model": model_name, "attack": attack_name,
                                       "shots": shots, "method": spec, "seed": seed, "n_clean": len(x_few),
                                       "acc_before": round(100 * before["acc"], 2),
                                       "asr_before": round(100 * before["asr"], 2),
                                       "acc_after": round(100 * after["acc"], 2),
                                       "asr_after": round(100 * after["asr"], 2),
                                       "acc_drop": round(100 * (before["acc"] - after["acc"]), 2),
                                       "seconds": round(seconds, 2), "train_seconds": round(train_seconds, 1),
                                       "threads": settings.threads, **reference, **_run_facts(history)}
                                rows.append(row)
                                writer.writerow(row)
                                handle.flush()
                                _log(settings, f"{dataset} {model_name} {attack_name} {shots}-shot seed {seed} "
                                               f"{spec}: ACC {row['acc_before']:.1f} -> {row['acc_after']:.1f}  "
                                               f"ASR {row['asr_before']:.1f} -> {row['asr_after']:.1f}  "
                                               f"{seconds:.1f}s")
                                if settings.plots == "all" or (settings.plots == "first" and seed == settings.seeds[0]):
                                    stem = _slug(f"{dataset}_{model_name}_{attack_name}_{shots}shot_{spec}_s{seed}")
                                    title = f"{dataset} {model_name} {attack_name} {shots}-shot {spec}"
                                    _save_plots(out / "png", stem, title, masks, trigger, history,
                                                true_trigger(attack, x_few))
                        write_markdown(rows, out / "results.md", settings)
    write_markdown(rows, out / "results.md", settings)
    _log(settings, f"wrote {csv_path}, {out / 'results.md'}")
    return rows


def _save_plots(folder: Path, stem: str, title: str, masks, trigger, history, truth: torch.Tensor) -> None:
    from awm_fast import plots  # matplotlib only when pictures are asked for

    if trigger is not None:
        plots.save_trigger_figure(folder / f"{stem}_trigger.png", trigger, truth, title)
    if masks:
        plots.save_mask_histograms(folder / f"{stem}_masks.png", masks, title)
    if history and any("acc" in record for record in history):
        plots.save_history_figure(folder / f"{stem}_history.png", history, title)


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Means over seeds per (dataset, model, attack, shots, method), with the bars checked."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in ("dataset", "model", "attack", "shots", "method")), []).append(row)
    summary = []
    for key, members in groups.items():
        mean = {name: statistics.mean(float(m[name]) for m in members)
                for name in ("acc_before", "asr_before", "acc_after", "asr_after", "acc_drop", "seconds")}
        references = [float(m["asr_clean_model"]) for m in members if m.get("asr_clean_model", "") != ""]
        mean["asr_clean_model"] = statistics.mean(references) if references else None
        passes = mean["asr_after"] <= BAR_ASR and mean["acc_drop"] <= BAR_DROP and mean["seconds"] <= BAR_SECONDS
        summary.append({**dict(zip(("dataset", "model", "attack", "shots", "method"), key, strict=True)), **mean,
                        "seeds": len(members), "passes": passes, "members": members})
    return summary


def write_markdown(rows: Sequence[dict], path: Path, settings: StudySettings | None = None) -> Path:
    """results.md: the summary (mean ± std over seeds) and every run."""
    lines = ["# AWM efficacy study", ""]
    if settings is not None:
        lines += [f"Poisoning rate {settings.rate:.0%}; backend {settings.backend}; torch threads {settings.threads}; "
                  f"eval images {settings.eval_limit or 'all'}. ACC/ASR in %, seconds = purification only.", ""]
    lines += ["## Mean over seeds", "",
              f"Bars: ASR after ≤ {BAR_ASR:g}%, ACC drop ≤ {BAR_DROP:g} points, ≤ {BAR_SECONDS:g} s. "
              "ASR clean model: the attack's success rate on the same architecture trained without poisoning "
              "(what a classifier with no backdoor already sends to the target; - when not measured).", "",
              "| dataset | model | attack | shots | method | seeds | ACC before | ASR before | ACC after | ASR after "
              "| ASR clean model | ACC drop | s | bars |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for group in summarize(rows):
        members = group["members"]
        lines.append(
            f"| {group['dataset']} | {group['model']} | {group['attack']} | {group['shots']} | `{group['method']}` | "
            f"{group['seeds']} | {group['acc_before']:.1f} | {group['asr_before']:.1f} | "
            f"{_mean_std([float(m['acc_after']) for m in members])} | "
            f"{_mean_std([float(m['asr_after']) for m in members])} | "
            f"{'-' if group['asr_clean_model'] is None else format(group['asr_clean_model'], '.1f')} | "
            f"{group['acc_drop']:.1f} | "
            f"{group['seconds']:.1f} | {'pass' if group['passes'] else 'fail'} |")
    lines += ["", "## Every run", "", "| " + " | ".join(CSV_COLUMNS) + " |", "|" + "---|" * len(CSV_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]) for c in CSV_COLUMNS) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- command line ------------------------------------------------------------------------------------------------


def add_study_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `study` sub-command to an argparse subparsers object; returns its parser."""
    parser = subparsers.add_parser("study", help="efficacy study: backdoor, purify, tabulate ACC/ASR (CSV, MD, PNG)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = StudySettings()
    parser.add_argument("--datasets", nargs="+", default=list(defaults.datasets))
    parser.add_argument("--models", nargs="+", default=list(defaults.models), help="small-cnn small-resnet ...")
    parser.add_argument("--attacks", nargs="+", default=list(defaults.attacks),
                        help=" ".join(ATTACKS) + " or all; each optionally NAME:key=value,... "
                        "(e.g. badnets:location=top-left,target=5)")
    parser.add_argument("--shots", nargs="+", type=int, default=list(defaults.shots), help="clean images per class")
    parser.add_argument("--methods", nargs="+", default=list(defaults.methods),
                        help="none awm-paper awm-improved ft anp, each optionally with [key=value,...] overrides")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(defaults.seeds))
    parser.add_argument("--rate", type=float, default=defaults.rate, help="poisoning rate")
    parser.add_argument("--train-epochs", type=int, default=None, help="default: 30 on digits, 3 elsewhere")
    parser.add_argument("--train-limit", type=int, default=None, help="train on N training images only")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate on at most N test images")
    parser.add_argument("--history-limit", type=int, default=defaults.history_limit,
                        help="test images for AWM's per-epoch ACC/ASR (0: no history)")
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--cache", default=defaults.cache, help="folder of cached backdoored models")
    parser.add_argument("--backend", default=defaults.backend)
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="torch threads (1 is fastest for these small models on a busy machine)")
    parser.add_argument("--plots", default=defaults.plots, choices=["none", "first", "all"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--no-clean-reference", dest="clean_reference", action="store_false",
                        help="skip the never-poisoned model of each dataset, model and seed (asr_clean_model)")


def run_study_from_args(args: argparse.Namespace) -> list[dict]:
    attacks = tuple(ATTACKS) if args.attacks == ["all"] else tuple(args.attacks)
    settings = StudySettings(
        datasets=tuple(args.datasets), models=tuple(args.models), attacks=attacks, shots=tuple(args.shots),
        methods=tuple(args.methods), seeds=tuple(args.seeds), rate=args.rate, train_epochs=args.train_epochs,
        train_limit=args.train_limit, eval_limit=args.eval_limit, history_limit=args.history_limit, out=args.out,
        cache=args.cache, backend=args.backend, threads=args.threads, plots=args.plots, data_root=args.data_root,
        verbose=not args.quiet, clean_reference=args.clean_reference)
    return run_study(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m awm_fast.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    run_study_from_args(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
