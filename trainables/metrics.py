"""Metrics as pure functions, and an accumulator whose state is all-reducible under DDP.

Names follow the schema ``split/metric[/modality]`` (see DESIGN.md): ``val/acc``, ``val/f1``,
``val/acc/<m>``, ``val/score/<m>`` (mean softmax probability of the true class through ``m``'s
logits, OGM-GE's s_m per sample), ``val/imbalance/score_ratio``, ``val/imbalance/acc_gap``,
``val/imbalance/dominant`` (the name of the modality with the highest score, so a flip shows),
``test/missing/<present modalities joined by +>/acc``.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import torch


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[true, pred]`` counts (int64), on the inputs' device.

    An accumulating ``index_put_`` rather than ``bincount``: CUDA's ``bincount`` reads the input's
    maximum on the host (a device sync per batch).
    """
    idx = labels.long() * num_classes + preds.long()
    cm = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=idx.device)
    return cm.index_put_((idx,), torch.ones_like(idx), accumulate=True).view(num_classes, num_classes)


def accuracy(cm: torch.Tensor) -> float:
    """Fraction of correct predictions from a confusion matrix (0 when empty)."""
    total = cm.sum().item()
    return cm.diag().sum().item() / total if total else 0.0


def macro_f1(cm: torch.Tensor) -> float:
    """Unweighted mean over classes of F1; a class absent from both labels and predictions is skipped."""
    cm = cm.double()
    tp = cm.diag()
    support, predicted = cm.sum(1), cm.sum(0)
    denom = support + predicted
    present = denom > 0
    if not present.any():
        return 0.0
    f1 = 2 * tp[present] / denom[present]
    return f1.mean().item()


def true_class_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch sum of softmax probability of the true class (OGM-GE's s_m, Peng et al. 2022 eq. 7)."""
    return torch.softmax(logits.float(), dim=1).gather(1, labels.long().view(-1, 1)).sum()


def score_ratio(scores: dict[str, float]) -> float:
    """Imbalance score ratio: dominant over weak modality score (max / min, >= 1; inf if min is 0)."""
    hi, lo = max(scores.values()), min(scores.values())
    return hi / lo if lo > 0 else float("inf")


def acc_gap(accs: dict[str, float]) -> float:
    """Per-modality accuracy gap: best modality's accuracy minus the worst one's."""
    return max(accs.values()) - min(accs.values())


def modality_subsets(modalities: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty proper subset and the full set, in a stable order (singletons first)."""
    return [c for r in range(1, len(modalities) + 1) for c in combinations(modalities, r)]


def subset_key(subset: tuple[str, ...]) -> str:
    return "+".join(subset)


class EvalAccumulator:
    """Accumulates sufficient statistics for one split; ``reduce`` sums them over DDP ranks.

    Statistics are confusion matrices (fused, per modality, per missing-modality subset), the
    per-modality true-class score sums, the loss sum and the sample count: everything is a sum,
    so all-reducing them before :meth:`compute` gives exactly the metrics of the whole split.
    """

    def __init__(self, modalities: list[str], num_classes: int, subsets: list[tuple[str, ...]] | None = None) -> None:
        self.modalities = list(modalities)
        self.subsets = list(subsets or [])
        self.k = num_classes
        z = lambda: torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.cm = z()
        self.cm_mod = {m: z() for m in self.modalities}
        self.cm_missing = {s: z() for s in self.subsets}
        self.scores = torch.zeros(len(self.modalities), dtype=torch.float64)
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.int64)

    def _on(self, device: torch.device) -> None:
        """Keep the statistics where the logits are, so a batch never waits for the device; the
        host reads them once, in :meth:`compute`."""
        if self.count.device != device:
            self.cm, self.scores = self.cm.to(device), self.scores.to(device)
            self.loss_sum, self.count = self.loss_sum.to(device), self.count.to(device)
            self.cm_mod = {m: t.to(device) for m, t in self.cm_mod.items()}
            self.cm_missing = {s: t.to(device) for s, t in self.cm_missing.items()}

    def update(self, logits: torch.Tensor, modality_logits: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        logits, labels = logits.detach(), labels.detach()
        self._on(logits.device)
        self.cm += confusion_matrix(logits.argmax(1), labels, self.k)
        self.loss_sum += torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum").double()
        self.count += labels.numel()
        for i, m in enumerate(self.modalities):
            if m not in modality_logits:  # a model that does not model m (e.g. ``unimodal``)
                continue
            ml = modality_logits[m].detach()
            self.cm_mod[m] += confusion_matrix(ml.argmax(1), labels, self.k)
            self.scores[i] += true_class_score(ml, labels).double()

    def update_missing(self, subset: tuple[str, ...], logits: torch.Tensor, labels: torch.Tensor) -> None:
        self._on(logits.device)
        self.cm_missing[subset] += confusion_matrix(logits.detach().argmax(1), labels.detach(), self.k)

    def tensors(self) -> list[torch.Tensor]:
        return [self.cm, *self.cm_mod.values(), *self.cm_missing.values(), self.scores, self.loss_sum, self.count]

    def reduce(self, all_reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum every statistic over ranks in place (``all_reduce`` sums one tensor in place)."""
        for t in self.tensors():
            all_reduce(t)

    def compute(self, split: str) -> dict[str, float | str]:
        self._on(torch.device("cpu"))  # one device-to-host read per split
        n = max(int(self.count.item()), 1)
        out = {
            f"{split}/acc": accuracy(self.cm),
            f"{split}/f1": macro_f1(self.cm),
            f"{split}/loss": self.loss_sum.item() / n,
        }
        # modalities without per-modality logits have empty confusion matrices and are not reported
        accs = {m: accuracy(cm) for m, cm in self.cm_mod.items() if cm.sum() > 0}
        for m, a in accs.items():
            out[f"{split}/acc/{m}"] = a
        scores = {m: self.scores[i].item() for i, m in enumerate(self.modalities) if m in accs}
        for m, sc in scores.items():
            out[f"{split}/score/{m}"] = sc / n
        if len(accs) > 1:
            out[f"{split}/imbalance/score_ratio"] = score_ratio(scores)
            out[f"{split}/imbalance/acc_gap"] = acc_gap(accs)
            out[f"{split}/imbalance/dominant"] = max(scores, key=lambda m: (scores[m], -self.modalities.index(m)))
        for s, cm in self.cm_missing.items():
            out[f"{split}/missing/{subset_key(s)}/acc"] = accuracy(cm)
        return out
