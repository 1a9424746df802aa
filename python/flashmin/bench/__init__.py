"""`python -m flashmin` / `flashmin-bench`: check correctness, time flashmin against PyTorch's
attention backends, print a table, and write it (with the device and date) to a record folder.

Without a GPU it runs the CPU path on small shapes and says so."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

import flashmin

from . import attention_suite, decode_suite, fa1_suite, report
from .timing import gpu_name

SUITES = ("attention", "decode", "fa1")


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m flashmin", description=__doc__)
    ap.add_argument("--suite", choices=SUITES + ("all",), default="attention")
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    ap.add_argument("--no-backward", action="store_true", help="time the forward only")
    ap.add_argument("--plot", type=Path, help="save a chart of the attention suite (PNG)")
    ap.add_argument("--record", type=Path, help="folder for the markdown + JSON record")
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = gpu_name() if device == "cuda" else "CPU"
    when = datetime.date.today().isoformat()
    print(f"flashmin {flashmin.__version__} on {name} ({when}); torch {torch.__version__}")
    if device == "cpu":
        print("No CUDA GPU in use: benchmarking the CPU path on small shapes (fp32).")
    suites = SUITES if args.suite == "all" else (args.suite,)
    sections, raw = {}, {"device": name, "date": when, "build": flashmin.build_info()}
    failures = []

    if "attention" in suites:
        rows = attention_suite.run(device, args.quick, backward=not args.no_backward)
        failures += attention_suite.correctness_failures(rows)
        lines = report.attention_table(rows)
        sections["Attention: flashmin vs peers (xPEER = PEER ms / flashmin ms)"] = lines
        raw["attention"] = rows
        print("\n".join(lines))
        if args.plot:
            report.plot_attention(rows, args.plot, f"flashmin vs peers on {name} ({when})")
            print(f"plot written to {args.plot}")
    if "decode" in suites and device == "cuda":
        rows, copy_gbs = decode_suite.run(device, args.quick)
        lines = decode_suite.table(rows, copy_gbs)
        sections["Flash-Decoding: K/V bandwidth"] = lines
        append_lines = decode_suite.append_table(rows)
        sections["Flash-Decoding: a decode step with the cache append"] = append_lines
        raw["decode"] = {"copy_gbs": copy_gbs, "rows": rows}
        print("\n".join(lines + [""] + append_lines))
    if "fa1" in suites:
        rows = fa1_suite.run(device, args.quick)
        lines = report.generic_table(rows, fa1_suite.COLUMNS)
        sections["FA1 vs FA2 (forward, non-causal) and the IO model"] = lines
        raw["fa1"] = rows
        print("\n".join(lines))

    if args.record:
        stem = f"{when}_{name.replace(' ', '_')}"
        path = report.write_record(
            args.record, stem, f"flashmin benchmark: {name}, {when}", sections, raw
        )
        print(f"record written to {path}")
    if failures:
        print("CORRECTNESS CHECK FAILED (error above 2x the peer's):\n  " + "\n  ".join(failures))
        return 1
    print("correctness: flashmin's error is within 2x of the peer's on every timed config")
    return 0
