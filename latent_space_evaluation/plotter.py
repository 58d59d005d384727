"""Figures: 2-D maps coloured by sleep stage (one fixed palette), and a comparison of configs.

Files are rendered off-screen (Agg) and written atomically. Points are drawn in a seeded random order
so that no stage is always painted over the others.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from latent_space_evaluation.metrics import BETTER  # noqa: E402
from latent_space_evaluation.reducers import REDUCTION_TITLES  # noqa: E402
from utils import STAGES, atomic_write_bytes  # noqa: E402

# Wake warm, NREM from light to deep blue, REM red: the same colour for a stage in every figure.
STAGE_COLORS = {"W": "#f2a71b", "N1": "#8cc6e8", "N2": "#3a7fc1", "N3": "#0b2a6b", "REM": "#d7301f"}
PALETTE = np.array([matplotlib.colors.to_rgb(STAGE_COLORS[s]) for s in STAGES])  # (5, 3), row = stage label


def plot_maps(rows: dict[str, tuple[dict[str, np.ndarray], np.ndarray, dict[str, str]]], path: str | Path,
              title: str = "", seed: int = 0) -> None:
    """One row per entry of `rows` ({row title: (maps {name: (n, 2)}, stages (n,), captions {name: text})}),
    one column per map, coloured by stage, with a shared stage legend."""
    n_rows = len(rows)
    n_cols = max(len(maps) for maps, _, _ in rows.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 4.0 * n_rows + 0.9), squeeze=False)
    rng = np.random.default_rng(seed)
    for r, (row_title, (maps, stages, captions)) in enumerate(rows.items()):
        order = rng.permutation(len(stages))
        size = float(np.clip(15_000 / len(stages), 1.0, 12.0))
        for c, (name, points) in enumerate(maps.items()):
            ax = axes[r, c]
            ax.scatter(points[order, 0], points[order, 1], c=PALETTE[stages[order]], s=size, alpha=0.7,
                       linewidths=0, rasterized=True)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(REDUCTION_TITLES.get(name, name) if r == 0 else "", fontsize=13)
            ax.set_xlabel(captions.get(name, ""), fontsize=10)
            if c == 0:
                ax.set_ylabel(row_title, fontsize=11)
    counts = np.bincount(np.concatenate([stages for _, stages, _ in rows.values()]), minlength=len(STAGES))
    handles = [Line2D([], [], marker="o", linestyle="", markersize=9, color=STAGE_COLORS[s], label=f"{s} ({n})")
               for s, n in zip(STAGES, counts)]
    fig.legend(handles=handles, loc="lower center", ncol=len(STAGES), frameon=False, fontsize=11,
               title="sleep stage (epochs mapped)", bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0.7 / (4.0 * n_rows + 0.9) + 0.02, 1, 1))
    _save(fig, path)


def plot_comparison(table: dict[tuple[str, str], dict[str, tuple[float, float | None]]], runs: list[str],
                    path: str | Path) -> None:
    """Horizontal bars of each (metric, space) in `table` ({run: (mean, std)}) for every run, std as error bar."""
    n_cols = min(4, len(table))
    n_rows = math.ceil(len(table) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols + 1.5, 0.35 * len(runs) * n_rows + 1.6 * n_rows),
                             squeeze=False, sharey=True)
    positions = np.arange(len(runs))
    for ax, ((name, space), values) in zip(axes.flat, table.items()):
        means = np.array([values.get(run, (np.nan, None))[0] for run in runs], dtype=float)
        stds = np.array([values.get(run, (np.nan, None))[1] or 0.0 for run in runs], dtype=float)
        ax.barh(positions, means, xerr=stds, color="#3a7fc1", ecolor="#333333", capsize=2)
        arrow = "↑" if BETTER[name] == "higher" else "↓"
        ax.set_title(f"{name} {arrow}\n({space})", fontsize=10)
        ax.axvline(0, color="#555555", linewidth=0.8)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes.flat[len(table):]:
        ax.set_visible(False)
    axes[0, 0].set_yticks(positions, runs)
    axes[0, 0].invert_yaxis()
    fig.suptitle("Latent-space metrics per config (mean ± std over folds; arrow = better direction)", fontsize=12)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: str | Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
