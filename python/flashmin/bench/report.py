"""Tables (terminal + markdown), the JSON record and the plot of a benchmark run."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _fmt(x, spec=".2f"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def attention_table(rows, ref="flashmin") -> list[str]:
    """One line per (config, pass): flashmin's ms and TFLOP/s, then each peer's TFLOP/s and
    the speed ratio peer_ms / flashmin_ms (> 1: flashmin is faster)."""
    peers = sorted({n for r in rows for n in r["ms"] if n != ref})
    head = ["dtype", "d", "causal", "B", "H", "S", "pass", f"{ref} ms", f"{ref} TF/s", "max err"]
    for p in peers:
        head += [f"{p} TF/s", f"x{p}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ms = r["ms"].get(ref)
        err = r.get("max_err", {}).get(ref)
        cells = [
            r["dtype"],
            r["head_dim"],
            "yes" if r["causal"] else "no",
            r["batch"],
            r["heads"],
            r["seqlen"],
            r["pass_"],
            _fmt(ms, ".3f"),
            _fmt(r["tflops"].get(ref), ".1f"),
            _fmt(err, ".1e") if err is not None else "",
        ]
        for p in peers:
            pm = r["ms"].get(p)
            cells += [_fmt(r["tflops"].get(p), ".1f"), _fmt(pm / ms if pm and ms else None, ".2f")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def generic_table(rows, columns) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                _fmt(r.get(c), ".3g") if isinstance(r.get(c), float) else str(r.get(c, "-"))
                for c in columns
            )
            + " |"
        )
    return lines


def write_record(directory: Path, stem: str, header: str, sections: dict, raw: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    md = [f"# {header}", ""]
    for title, lines in sections.items():
        md += [f"## {title}", "", *lines, ""]
    path = directory / f"{stem}.md"
    path.write_text("\n".join(md))
    (directory / f"{stem}.json").write_text(json.dumps(raw, indent=1, default=str))
    return path


def plot_attention(rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["head_dim"] for r in rows})
    passes = [p for p in ("fwd", "bwd") if any(r["pass_"] == p for r in rows)]
    dtype = rows[0]["dtype"]
    fig, axes = plt.subplots(
        len(passes), len(dims), figsize=(5 * len(dims), 4 * len(passes)), squeeze=False
    )
    for i, p in enumerate(passes):
        for j, d in enumerate(dims):
            ax = axes[i][j]
            for causal, style in ((False, "-"), (True, "--")):
                sel = [
                    r
                    for r in rows
                    if r["pass_"] == p
                    and r["head_dim"] == d
                    and r["causal"] == causal
                    and r["dtype"] == dtype
                ]
                names = sorted({n for r in sel for n in r["tflops"]})
                for n in names:
                    xs = [r["seqlen"] for r in sel if n in r["tflops"]]
                    ys = [r["tflops"][n] for r in sel if n in r["tflops"]]
                    ax.plot(xs, ys, style, marker="o", label=f"{n}{' causal' if causal else ''}")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{p} {dtype} d={d}")
            ax.set_xlabel("seqlen")
            ax.set_ylabel("TFLOP/s")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # as write_record does for its folder
    fig.savefig(path, dpi=110)
    plt.close(fig)
