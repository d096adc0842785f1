"""What a run records: the poster's exploration measure and the per-epoch log.

Exploration (poster, "Exploration vs Exploitation Tradeoffs"): for every quantized layer,
the percentage of its quantized weights that differ from their values at the start of
training. SR-ADAM keeps changing weights (the poster: until nearly 40% differ); BC-ADAM
stays under 20%; R-ADAM barely moves.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch

from .._io import atomic_write_bytes, json_safe, metrics_csv, read_metrics  # noqa: F401  (re-exported)


class WeightChangeTracker:
    """Remembers each tracked tensor's starting value; :meth:`percent_changed` compares."""

    def __init__(self, named_params: Iterable[Tuple[str, torch.Tensor]]):
        self.params = list(named_params)
        self.initial = {n: p.detach().clone() for n, p in self.params}

    def percent_changed(self) -> Dict[str, float]:
        return {n: 100.0 * float((p.detach() != self.initial[n]).float().mean()) for n, p in self.params}

    def state_dict(self) -> dict:
        return {n: t for n, t in self.initial.items()}

    def load_state_dict(self, sd: dict) -> None:
        missing = sorted(set(self.initial) - set(sd))
        if missing:
            raise ValueError(f"checkpoint lacks the starting weights of {missing[0]} (tracked layers differ)")
        for n in self.initial:
            self.initial[n].copy_(sd[n])


class MetricsLog:
    """Appends one JSON object per epoch to ``metrics.jsonl``, rewrites ``metrics.csv`` beside it
    (one row per epoch, one column per scalar and per layer's ``weight_change/<layer>``; for
    spreadsheets and pandas) and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = False):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.csv_path = self.path.with_suffix(".csv")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("--tensorboard needs the tensorboard package: pip install 'qtrain[tensorboard]' "
                                 "(or QTRAIN_EXTRAS=tensorboard bash scripts/setup.sh)") from None
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def rewrite(self, rows: List[dict]) -> None:
        """Replace the file by ``rows`` (a resumed run writes the history its checkpoint holds,
        so a damaged, partial or missing file comes back whole)."""
        atomic_write_bytes(self.path, "".join(json.dumps(json_safe(r)) + "\n" for r in rows).encode())
        atomic_write_bytes(self.csv_path, metrics_csv(rows).encode())

    def append(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(json_safe(row)) + "\n")
        atomic_write_bytes(self.csv_path, metrics_csv(read_metrics(self.path)).encode())
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.writer.add_scalar(k, v, row["epoch"])
            for layer, pct in row.get("weight_change", {}).items():
                self.writer.add_scalar(f"weight_change/{layer}", pct, row["epoch"])
            self.writer.flush()

    def read(self) -> List[dict]:
        return read_metrics(self.path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def error_percent(correct: int, total: int) -> Optional[float]:
    return None if total == 0 else 100.0 * (1 - correct / total)
