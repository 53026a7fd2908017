"""Pictures of architectures for TensorBoard: a genotype diagram and an op-probability heatmap.

Both are drawn with matplotlib's Agg backend into RGB arrays, so they work without a display.
Labels are grouped into streams by their prefix (``enc/3`` is block 3 of stream ``enc``);
ops listed in ``links`` (e.g. guided attention) are drawn with an arrow from the end of the
stream they read to the block that reads it.
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from typing import Mapping

import numpy as np

__all__ = ["genotype_diagram", "probability_heatmap", "streams_of"]

# Colour-blind-safe qualitative colours (Okabe-Ito), one per op name in order of first use.
_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"]
_STREAM_NAMES = {"enc": "encoder (text)", "dec": "decoder (image)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def streams_of(labels: list[str]) -> "OrderedDict[str, list[str]]":
    """``{"enc": ["enc/0", ...], "dec": [...]}`` in block order; labels without an index form their own stream.

    A label with a part after its index (the lxmert space's ``lang/3/ffn``) belongs to the stream
    ``lang/ffn``: one row per sublayer kind, one column per layer.
    """
    streams: OrderedDict[str, list[tuple[int, str]]] = OrderedDict()
    for label in labels:
        match = re.fullmatch(r"(.+?)/(\d+)(/.+)?", label)
        stream, index = (match.group(1) + (match.group(3) or ""), int(match.group(2))) if match else (label, 0)
        streams.setdefault(stream, []).append((index, label))
    return OrderedDict((s, [label for _, label in sorted(items)]) for s, items in streams.items())


def _render(fig) -> np.ndarray:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    _pyplot().close(fig)
    buffer.seek(0)
    from matplotlib.image import imread

    image = imread(buffer, format="png")[..., :3]  # (H, W, 3) floats in [0, 1]
    return (image * 255).round().astype(np.uint8)


def genotype_diagram(choices: Mapping[str, str], title: str = "", short_names: Mapping[str, str] | None = None,
                     links: Mapping[str, str] | None = None) -> np.ndarray:
    """One row of coloured cells per stream, op names in the cells, block indices above them.

    Args:
        choices: ``{label: op}`` of a genotype.
        title: shown above the diagram (e.g. the file name and epoch).
        short_names: op -> short name written in the cell (e.g. guided_att -> GA).
        links: op -> the stream it reads; drawn as an arrow from that stream's last block.
    Returns:
        (H, W, 3) uint8 RGB image.
    """
    plt = _pyplot()
    short_names = dict(short_names or {})
    links = dict(links or {})
    streams = streams_of(list(choices))
    ops = list(dict.fromkeys(choices[label] for labels in streams.values() for label in labels))
    colours = {op: _PALETTE[i % len(_PALETTE)] for i, op in enumerate(ops)}
    width = max(len(labels) for labels in streams.values())
    fig, ax = plt.subplots(figsize=(max(6.0, 0.62 * width + 2.6), 1.5 + 1.25 * len(streams)))
    rows = {stream: len(streams) - 1 - row for row, stream in enumerate(streams)}  # first stream on top
    for stream, labels in streams.items():
        y = rows[stream] * 1.6
        ax.text(-0.7, y + 0.45, _STREAM_NAMES.get(stream, stream), ha="right", va="center", fontsize=10)
        for x, label in enumerate(labels):
            op = choices[label]
            ax.add_patch(plt.Rectangle((x, y), 0.9, 0.9, facecolor=colours[op], edgecolor="black", linewidth=0.6))
            ax.text(x + 0.45, y + 0.45, short_names.get(op, op), ha="center", va="center", fontsize=8,
                    color="white" if colours[op] in _PALETTE[:1] + _PALETTE[2:4] + _PALETTE[5:6] else "black")
            ax.text(x + 0.45, y + 1.0, str(x), ha="center", va="bottom", fontsize=7, color="#444444")
            source = links.get(op)
            if source in streams and source != stream:
                sy = rows[source] * 1.6
                start_x = len(streams[source]) - 0.55
                start_y, end_y = (sy, y + 0.9) if sy > y else (sy + 0.9, y)
                ax.annotate("", xy=(x + 0.45, end_y), xytext=(start_x, start_y),
                            arrowprops={"arrowstyle": "->", "color": "#555555", "linewidth": 0.7, "alpha": 0.8})
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=colours[op], edgecolor="black") for op in ops]
    names = [f"{short_names[op]} = {op}" if op in short_names else op for op in ops]
    ax.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(len(ops), 4),
              fontsize=8, frameon=False)
    ax.set_xlim(-0.3, width + 0.2)
    ax.set_ylim(-0.3, 1.6 * (len(streams) - 1) + 1.35)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return _render(fig)


def probability_heatmap(probabilities: Mapping[str, Mapping[str, float]], title: str = "") -> np.ndarray:
    """Blocks x ops heatmap of a strategy's op probabilities (a blank cell: not a candidate there).

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    plt = _pyplot()
    labels = [label for stream in streams_of(list(probabilities)).values() for label in stream]
    ops = list(dict.fromkeys(op for label in labels for op in probabilities[label]))
    grid = np.full((len(labels), len(ops)), np.nan)
    for row, label in enumerate(labels):
        for column, op in enumerate(ops):
            if op in probabilities[label]:
                grid[row, column] = probabilities[label][op]
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * len(ops), 1.0 + 0.28 * len(labels)))
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(ops)), ops, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for row in range(len(labels)):
        best = int(np.nanargmax(grid[row]))
        for column in range(len(ops)):
            if not np.isnan(grid[row, column]):
                ax.text(column, row, f"{grid[row, column]:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if grid[row, column] > 0.6 else "white",
                        fontweight="bold" if column == best else "normal")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="probability")
    if title:
        ax.set_title(title, fontsize=10)
    return _render(fig)
