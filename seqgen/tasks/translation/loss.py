"""A translator's training loss: the label-smoothed cross-entropy of a batch's target
tokens, over every output row or a lexical shortlist's (``train.shortlist_loss``)."""

from __future__ import annotations

import numpy as np
import torch

from seqgen.tasks.translation.config import TranslationTrainConfig
from seqgen.tasks.translation.decoder import OutputRows
from seqgen.tasks.translation.model import EncoderDecoder
from seqgen.training.loss import cross_entropy_sum


class TranslationLoss(torch.nn.Module):
    """The training loss as one module, so DistributedDataParallel can wrap it: its forward
    is what a step differentiates (the model's features, then the scores of the output rows
    the loss needs)."""

    def __init__(self, model: EncoderDecoder, train: TranslationTrainConfig) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = train.label_smoothing
        self.shortlist_loss = train.shortlist_loss

    def forward(
        self,
        source_ids: torch.Tensor,
        source_lengths: torch.Tensor,
        target_in: torch.Tensor,
        target_out: torch.Tensor,
    ) -> torch.Tensor:
        """The summed (label-smoothed) cross-entropy of the batch's real target tokens, from
        ``source_ids`` ``(rows, source_len)``, ``source_lengths`` ``(rows,)`` and
        ``target_in`` / ``target_out`` ``(rows, target_len)`` (0 = padding)."""
        # Score only real target positions: padding would cost output-layer work.
        real = target_out != 0
        features = self.model.features(source_ids, source_lengths, target_in, real)
        output, targets = self._candidates(source_ids, target_out[real])
        logits = self.model.decoder.scores(features, output)
        return cross_entropy_sum(logits, targets, label_smoothing=self.label_smoothing)

    def _candidates(
        self, source_ids: torch.Tensor, targets: torch.Tensor
    ) -> tuple[OutputRows | None, torch.Tensor]:
        """The output layer's rows the loss scores (None: every token's) and the ``targets``
        ``(tokens,)`` as indices into them.

        With ``train.shortlist_loss`` only the rows of the batch's candidates: its sources'
        lexical shortlist (what decoding scores for them) and its targets, sorted, so the
        softmax is normalised over those (the target vocabulary subsets of Jean et al., 2015)
        and the output layer's work shrinks with them (8,000 -> about 2,000 rows for 64
        Multi30k sentences).
        """
        if not self.shortlist_loss:
            return None, targets
        shortlist = self.model.shortlist_ids(source_ids.cpu().numpy())
        rows = np.union1d(shortlist, targets.cpu().numpy())
        candidates = torch.from_numpy(rows).to(targets.device)
        output = self.model.decoder.output_rows(candidates)
        return output, torch.searchsorted(candidates, targets)
