"""Command line: `python -m awm_fast <command>` or `awm-fast <command>`."""

from __future__ import annotations

import argparse
import sys

from awm_fast.config import MODES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="awm-fast", description="Adversarial Weight Masking: erase backdoors.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="backdoor a small CNN, purify it one-shot, print ACC/ASR")
    demo.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"])
    demo.add_argument("--mode", default="paper", choices=MODES)
    demo.add_argument("--backend", default="auto", choices=["auto", "reference", "torch", "triton"])
    demo.add_argument("--per-class", type=int, default=1, help="clean images per class given to purify")
    demo.add_argument("--outer", type=int, default=20, help="outer AWM epochs")
    demo.add_argument("--train-epochs", type=int, default=None, help="epochs of backdoor training")
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from awm_fast.demo import DemoSettings, run_demo

        run_demo(DemoSettings(dataset=args.dataset, mode=args.mode, backend=args.backend, per_class=args.per_class,
                              seed=args.seed, train_epochs=args.train_epochs, outer=args.outer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
