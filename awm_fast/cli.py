"""Command line: `python -m awm_fast <command>` or `awm-fast <command>`.

    awm-fast demo                                   backdoor a small CNN, purify it one-shot, print ACC/ASR
    awm-fast purify --model-def M:C --weights W --data D --out OUT.safetensors [--config C.yaml] ...
    awm-fast evaluate --model-def M:C --weights W --data D [--attack badnets:size=3,target=0]

Exit codes: 0 success; 2 bad input (a file, option or data that was rejected: ValueError, TypeError, missing
file); 1 internal failure (anything else, e.g. a failed write); 130 interrupted. Errors and warnings go to
stderr as one line each ("awm-fast: error: ..."); --debug adds the traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from awm_fast.config import BACKEND_NAMES, MODES

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# What "the input was rejected" looks like: our checks raise ValueError/TypeError, the OS the rest.
BAD_INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)

_DATA_HELP = ("an .npz with arrays x [N, C, H, W] (float in input_bounds, or uint8 scaled by 1/255; [N, H, W] is one "
              "channel) and integer labels y [N]; a directory holding x.npy and y.npy (same rules); or a directory "
              "of class sub-folders of images (png, jpg, ...: one size, read with Pillow, grayscale stays one "
              "channel; labels are the folder names when all are integers, else their sorted order)")
_MODEL_DEF_HELP = ("MODULE:CLASS (an importable module, or path/to/file.py:CLASS; CLASS may be a factory function) "
                   "or torchvision:NAME (torchvision.models.NAME(weights=None); nothing is downloaded)")
_WEIGHTS_HELP = (".safetensors, or .pt/.pth/.bin holding a state dict, loaded with torch.load(weights_only=True): "
                 "nothing in a checkpoint is ever executed")
_ATTACK_HELP = ("attack used to measure ASR: NAME[:key=value,...], NAME one of badnets, blend, trojan-square, "
                "trojan-watermark, all-to-all, wanet, sig; e.g. badnets:size=3,offset=1,target=0")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (exit 2) instead of printing the usage block."""

    def error(self, message: str):
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="awm-fast", description="Adversarial Weight Masking: erase backdoors.",
                     epilog="Exit codes: 0 success, 2 bad input, 1 internal failure.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="backdoor a small CNN, purify it one-shot, print ACC/ASR")
    demo.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"])
    demo.add_argument("--mode", default="improved", choices=MODES)
    demo.add_argument("--backend", default="auto", choices=["auto", "reference", "torch", "triton"])
    demo.add_argument("--per-class", type=int, default=1, help="clean images per class given to purify")
    demo.add_argument("--outer", type=int, default=20, help="outer AWM epochs")
    demo.add_argument("--train-epochs", type=int, default=None, help="epochs of backdoor training")
    demo.add_argument("--seed", type=int, default=0)

    common = _Parser(add_help=False)
    common.add_argument("--model-def", required=True, metavar="SPEC", help=_MODEL_DEF_HELP)
    common.add_argument("--model-kwargs", default=None, metavar="JSON",
                        help='keyword arguments of the model definition, e.g. \'{"num_classes": 10}\'')
    common.add_argument("--weights", required=True, metavar="FILE", help=_WEIGHTS_HELP)
    common.add_argument("--data", required=True, metavar="PATH", help=_DATA_HELP)
    common.add_argument("--attack", default=None, metavar="SPEC", help=_ATTACK_HELP)
    common.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: the config's, else cpu)")
    common.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    common.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")
    common.add_argument("--debug", action="store_true", help="print the traceback of an error")

    purify = commands.add_parser(
        "purify", parents=[common], help="purify a checkpoint: write the purified weights, a JSON report and plots",
        description="Purify a trained checkpoint with AWM and write OUT (.safetensors or .pt) atomically, with "
                    "OUT-stem.report.json and OUT-stem.{trigger,masks,history}.png beside it.")
    purify.add_argument("--out", required=True, metavar="FILE", help="purified weights: .safetensors (or .pt)")
    purify.add_argument("--config", default=None, metavar="FILE",
                        help="AWMConfig options as YAML or JSON, e.g. 'outer: 10' (see awm_fast.AWMConfig)")
    purify.add_argument("--eval-data", default=None, metavar="PATH",
                        help="held-out data for ACC (and ASR with --attack) before, after and per outer epoch")
    purify.add_argument("--seed", type=int, default=None, help="overrides the config's seed (default 0)")
    purify.add_argument("--mode", default=None, choices=MODES, help="overrides the config's mode")
    purify.add_argument("--backend", default=None, choices=BACKEND_NAMES, help="overrides the config's backend")
    purify.add_argument("--outer", type=int, default=None, help="overrides the config's outer epochs")
    purify.add_argument("--no-plots", action="store_true", help="write no PNG plots")

    evaluate = commands.add_parser("evaluate", parents=[common], help="ACC (and ASR for --attack) of a checkpoint",
                                   description="Clean accuracy and, with --attack, attack success rate of a checkpoint "
                                               "on a dataset.")
    evaluate.add_argument("--report", default=None, metavar="FILE.json", help="also write the figures as JSON")

    from awm_fast.study import add_study_parser

    add_study_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        print(f"awm-fast: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    debug = getattr(args, "debug", False)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning_in_one_line
        try:
            return _COMMANDS[args.command](args)
        except KeyboardInterrupt:
            print("awm-fast: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BAD_INPUT_ERRORS as exc:
            _report_error(exc, "error", debug)
            return EXIT_BAD_INPUT
        except Exception as exc:
            _report_error(exc, f"internal error ({type(exc).__name__})", debug, hint=" (--debug for the traceback)")
            return EXIT_INTERNAL


def _report_error(exc: BaseException, label: str, debug: bool, hint: str = "") -> None:
    """One line on stderr; with --debug the traceback comes first (and the hint is dropped)."""
    if debug:
        traceback.print_exc()
        hint = ""
    print(f"awm-fast: {label}: {_one_line(exc)}{hint}", file=sys.stderr)


def _show_warning_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"awm-fast: warning: {_one_line(message)}", file=sys.stderr)


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


# ------------------------------------------------------------------------------------------------ commands


def _demo(args: argparse.Namespace) -> int:
    from awm_fast.demo import DemoSettings, run_demo

    run_demo(DemoSettings(dataset=args.dataset, mode=args.mode, backend=args.backend, per_class=args.per_class,
                          seed=args.seed, train_epochs=args.train_epochs, outer=args.outer))
    return EXIT_OK


def _purify(args: argparse.Namespace) -> int:
    import torch

    import awm_fast
    from awm_fast import checkpoints, ops, report

    start = time.perf_counter()
    out = Path(args.out)
    if out.suffix.lower() not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"--out {out}: use a .safetensors (or .pt) file name")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: directory {out.parent} does not exist")
    if args.attack and not args.eval_data:
        raise ValueError("--attack needs --eval-data: ASR is measured on held-out data, not on the purification set")
    config = _config(args)
    attack = _attack(args.attack)
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    model = _model(args, config.device)
    timings["load_model"] = time.perf_counter() - tick
    tick = time.perf_counter()
    data = checkpoints.load_data(args.data, _progress_wrapper(args, "reading images"))
    eval_data = checkpoints.load_data(args.eval_data, _progress_wrapper(args, "reading images")) \
        if args.eval_data else None
    timings["load_data"] = time.perf_counter() - tick

    metrics: dict[str, Any] = {}
    if eval_data is not None:
        tick = time.perf_counter()
        metrics["before"] = _evaluate(model, eval_data, attack, args, "before")
        timings["evaluate_before"] = time.perf_counter() - tick

    bar = _progress_bar(args, total=config.outer, desc="AWM outer epochs")

    def eval_fn(masked_model):
        figures = {} if eval_data is None else _evaluate(masked_model, eval_data, attack, args, None)
        if bar.n >= bar.total:  # an extra_outer or residual_outer epoch beyond the planned ones
            bar.total = bar.n + 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in figures.items() if v is not None}, refresh=False)
        return {k: v for k, v in figures.items() if v is not None}

    tick = time.perf_counter()
    try:
        result = awm_fast.purify(model, (data.x, data.y), config, eval_fn=eval_fn)
    finally:
        bar.close()
    timings["purify"] = time.perf_counter() - tick
    if eval_data is not None:
        tick = time.perf_counter()
        metrics["after"] = _evaluate(result.model, eval_data, attack, args, "after")
        timings["evaluate_after"] = time.perf_counter() - tick

    tick = time.perf_counter()
    checkpoints.save_weights(result.model.state_dict(), out)
    timings["save_weights"] = time.perf_counter() - tick
    tick = time.perf_counter()
    stem = out.with_suffix("")
    report_path = stem.with_name(f"{stem.name}.report.json")
    plots = [] if args.no_plots else report.write_plots(result, stem, metrics.get("before"))
    timings["plots"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start
    run_device = torch.device(config.device or "cpu")  # the model is built on the CPU, then moved to --device
    run = {"device": str(run_device), "backend": ops.resolve_backend(result.config.backend, run_device),
           "outputs": {"weights": str(out), "report": str(report_path), "plots": [str(p) for p in plots]}}
    inputs = {"model_def": args.model_def, "model_kwargs": checkpoints.parse_model_kwargs(args.model_kwargs),
              "weights": {"path": args.weights, "sha256": _sha256(args.weights)}, "data": data.describe(),
              "eval_data": eval_data.describe() if eval_data is not None else None, "attack": args.attack,
              "config_file": args.config}
    built = report.build_report(result, inputs=inputs, timings=timings, metrics=metrics, run=run)
    report.write_report(built, report_path)
    print(report.summary_table(_purify_rows(built, metrics), title="awm-fast purify"))
    return EXIT_OK


def _evaluate_command(args: argparse.Namespace) -> int:
    from awm_fast import checkpoints, report

    start = time.perf_counter()
    if args.report and Path(args.report).suffix.lower() != ".json":
        raise ValueError(f"--report {args.report}: use a .json file name")
    attack = _attack(args.attack)
    _check_device_and_backend(args.device)
    model = _model(args, args.device)
    data = checkpoints.load_data(args.data, _progress_wrapper(args, "reading images"))
    figures = _evaluate(model, data, attack, args, "evaluating")
    rows = [("model", args.model_def), ("weights", args.weights), ("data", _describe_data(data.describe())),
            ("ACC", _percent(figures["acc"]))]
    if attack is not None:
        rows.append((f"ASR ({args.attack})", _percent(figures.get("asr"))))
    rows.append(("seconds", f"{time.perf_counter() - start:.1f}"))
    print(report.summary_table(rows, title="awm-fast evaluate"))
    if args.report:
        report.write_report({"inputs": {"model_def": args.model_def, "weights": args.weights,
                                        "data": data.describe(), "attack": args.attack},
                             "metrics": figures, "package_versions": report.package_versions()}, args.report)
    return EXIT_OK


def _study(args: argparse.Namespace) -> int:
    from awm_fast.study import run_study_from_args

    run_study_from_args(args)
    return EXIT_OK


_COMMANDS = {"demo": _demo, "purify": _purify, "evaluate": _evaluate_command, "study": _study}


# ------------------------------------------------------------------------------------------------ helpers


def _config(args: argparse.Namespace):
    from awm_fast import checkpoints
    from awm_fast.config import AWMConfig

    config = AWMConfig()
    if args.config:
        options = checkpoints.load_config_file(args.config)
        try:
            config = config.replace(**options).validate()
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"--config {args.config}: {exc}") from None
    flags = {"seed": args.seed, "mode": args.mode, "backend": args.backend, "outer": args.outer,
             "device": args.device}
    config = config.replace(**{key: value for key, value in flags.items() if value is not None}).validate()
    _check_device_and_backend(config.device, config.backend)
    return config


def _check_device_and_backend(device: str | None, backend: str = "auto") -> None:
    """Refuse an unusable --device or backend up front (exit 2), before a model is built or moved."""
    import torch

    from awm_fast import ops
    from awm_fast.purify import _run_device

    run_device = _run_device(device, torch.device("cpu"))
    try:
        ops.resolve_backend(backend, run_device)
    except RuntimeError as exc:  # e.g. backend "triton" on a machine without CUDA: the user's choice, not a bug
        raise ValueError(str(exc)) from None


def _model(args: argparse.Namespace, device: str | None):
    from awm_fast import checkpoints

    model = checkpoints.build_model(args.model_def, checkpoints.parse_model_kwargs(args.model_kwargs))
    checkpoints.load_weights(model, args.weights)
    model.eval()  # a checkpoint is evaluated and purified in eval mode; built modules start in train mode
    return model.to(device) if device is not None else model


def _attack(spec: str | None):
    """An Attack from NAME[:key=value,...] (attacks.parse_attack)."""
    if not spec:
        return None
    from awm_fast.attacks import make_attack, parse_attack

    try:
        name, kwargs = parse_attack(spec)
        return make_attack(name, **kwargs)
    except TypeError as exc:
        raise TypeError(f"--attack {spec!r}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"--attack {spec!r}: {exc}") from None


def _evaluate(model, data, attack, args: argparse.Namespace, label: str | None) -> dict[str, float | None]:
    """{"acc": ACC, "asr": ASR or None}, batch by batch under a progress bar (metrics.py's definitions:
    ASR leaves out the samples whose label already is their target)."""
    import torch

    from awm_fast.inputs import as_tensors
    from awm_fast.metrics import predict
    from awm_fast.purify import _check_logits

    x, y = as_tensors((data.x, data.y))
    device = next(model.parameters()).device
    with torch.no_grad():
        _check_logits(model.eval(), x[:2].to(device), y.to(device))
    batch = args.batch_size
    if batch < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch}")
    keep = None
    if attack is not None:
        targets = attack.target_labels(y)
        keep = targets != y
    chunks = math.ceil(len(x) / batch) + (math.ceil(int(keep.sum()) / batch) if keep is not None else 0)
    bar = _progress_bar(args, total=chunks, desc=label or "eval", disable=label is None)
    try:
        correct = 0
        for start in range(0, len(x), batch):
            correct += int((predict(model, x[start:start + batch], batch) == y[start:start + batch]).sum())
            bar.update(1)
        figures: dict[str, float | None] = {"acc": correct / len(x)}
        if keep is not None:
            x_kept, target_kept = x[keep], targets[keep]
            hits = 0
            for start in range(0, len(x_kept), batch):
                predictions = predict(model, x_kept[start:start + batch], batch, attack=attack)
                hits += int((predictions == target_kept[start:start + batch]).sum())
                bar.update(1)
            figures["asr"] = hits / len(x_kept) if len(x_kept) else None
    finally:
        bar.close()
    return figures


class _NoBar:
    n = total = 0

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(args: argparse.Namespace, total: int, desc: str, disable: bool = False):
    """A tqdm bar on stderr, shown only on a terminal (tqdm's disable=None); a no-op without tqdm."""
    if args.no_progress or disable:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, disable=None, file=sys.stderr, dynamic_ncols=True)


def _progress_wrapper(args: argparse.Namespace, desc: str):
    if args.no_progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return lambda items: tqdm(items, desc=desc, disable=None, file=sys.stderr, dynamic_ncols=True)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _describe_data(description: dict[str, Any]) -> str:
    classes = description["classes"]
    return f"{description['samples']} samples {tuple(description['shape'])}, {len(classes)} classes"


def _purify_rows(built: dict[str, Any], metrics: dict[str, Any]) -> list[tuple[str, str]]:
    config, masks, timings = built["config"], built["masks"], built["timings_seconds"]
    numel = sum(stats["numel"] for stats in masks.values())
    mean = sum(stats["mean"] * stats["numel"] for stats in masks.values()) / max(numel, 1)
    below = sum(stats["fraction_below_0.5"] * stats["numel"] for stats in masks.values()) / max(numel, 1)
    rows = [("model", built["inputs"]["model_def"]), ("data", _describe_data(built["inputs"]["data"])),
            ("mode / backend / precision", f"{config['mode']} / {built['run']['backend']} / {config['precision']}"),
            ("device / seed", f"{built['run']['device']} / {config['seed']}"),
            ("outer epochs x steps", f"{config['outer']} x {config['steps']}")]
    for key in ("acc", "asr"):
        if key in metrics.get("before", {}) and key in metrics.get("after", {}):
            rows.append((f"{key.upper()} before -> after",
                         f"{_percent(metrics['before'][key])} -> {_percent(metrics['after'][key])}"))
    rows += [("masked layers", str(len(masks))), ("mask mean", f"{mean:.4f}"),
             ("mask entries < 0.5", f"{100 * below:.2f}%"),
             ("trigger L1", ", ".join(f"{v:.3g}" for v in built["trigger"]["l1"])),
             ("seconds (purify / total)", f"{timings['purify']:.1f} / {timings['total']:.1f}"),
             ("weights", built["run"]["outputs"]["weights"]), ("report", built["run"]["outputs"]["report"])]
    rows += [("plot", plot) for plot in built["run"]["outputs"]["plots"]]
    return rows


if __name__ == "__main__":
    sys.exit(main())
