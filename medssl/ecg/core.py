"""CoRe-ECG: contrastive and reconstructive pretraining of one ECG encoder (Qin et al.,
"CoRe-ECG: Advancing Self-Supervised Representation Learning for 12-Lead ECG via Contrastive and
Reconstructive Synergy", arXiv:2604.11359, 2026).

What the paper states (abstract): one encoder trained with an instance-level contrastive
objective on global representations and a masked reconstruction objective; global
representations are aligned during reconstruction so that instance-level signals guide local
waveform recovery; views come from Frequency Dynamic Augmentation (FDA,
`medssl.ecg.frequency_augment`); masks from Spatio-Temporal Dual Masking (STDM,
`medssl.ecg.dual_masking`). The paper's equations were not available to us; the composition
below is ours where marked.

One training step on a batch x (B, L, T), all randomness from a generator seeded by
(seed, step, rank):

1. two views v1, v2 = FDA(x), FDA(x);
2. an STDM mask per view; the encoder sees only each view's visible tokens
   (`encoder.encode`), giving hidden states h1, h2;
3. global representations g_i = encoder.pool(h_i) (mean over visible patch tokens, LayerNorm);
4. L_con = NT-Xent(proj(g1), proj(g2)) with a SimCLR projection head (negatives: the other
   2B - 2 views of the batch);
5. alignment during reconstruction (our reading): the decoder of view 1 is conditioned on the
   *other* view's global representation g2, prepended as one extra token, and vice versa, so
   reconstruction can only use it to the extent that the two views' global representations
   agree on the instance; gradients flow into both views' encoders;
6. L_rec = mean over the two views of the MSE on hidden patches (`masked_patch_loss`), with
   the clean, un-augmented x as target (our choice: FDA views are treated as perturbed inputs
   of one underlying ECG), per-patch normalised targets by default;
7. loss = w_con * L_con + w_rec * L_rec.

The decoder decodes all leads jointly (`PatchDecoder(lead_wise=False)`), as hidden whole leads
leave a lead-wise decoder nothing to work from.

Sources: the abstract (arXiv:2604.11359) and third-party summaries; the method section, its
equations and its hyper-parameters were not available to us. One machine-written summary
(ArxivLens) describes FDA's importance maps as "learnable" and STDM as dropping temporal segments
and leads at random; we could not check either against the paper.

Every choice made where the paper was not available, in one place (all settable from
`recipes/core_ecg.yaml`; details in the modules named):

- composition (this module): two FDA views per ECG; an STDM mask per view; global representation =
  LayerNorm of the mean over visible patch tokens; contrastive term NT-Xent at temperature 0.1 on a
  SimCLR projection head (2048 hidden, 128 out, no batch norm), negatives the other 2B - 2 views;
  "alignment during reconstruction" read as cross-conditioning: each view's decoder gets the other
  view's global representation as one prepended token (`cross_condition`); reconstruction target
  the clean, un-augmented x, per-patch normalised (`norm_target`), MSE on hidden patches only,
  averaged over the two views; loss = 1.0 * contrastive + 1.0 * reconstruction; one decoder for all
  leads jointly (ST-MEM's size: 256 wide, 4 deep, 4 heads); encoder ST-MEM's ViT-B/75 at 250 Hz;
  optimiser the MAE recipe's (AdamW, blr 1.5e-4, betas 0.9/0.95, weight decay 0.05, 800 epochs).
- FDA (`medssl.ecg.frequency_augment`): importance of an rFFT bin = its magnitude over the
  sample's largest, averaged over leads (`shared_across_leads`, so the view is one linear filter on
  all leads and the lead algebra holds); a bin is perturbed with probability
  p_max * (1 - importance)^gamma (0.5, gamma 1), by a gain 1 + 0.5 * (1 - importance) * U(-1, 1) and
  a phase 0.25 pi * (1 - importance) * U(-1, 1); DC and Nyquist keep phase 0; no learned parameters.
- STDM (`medssl.ecg.dual_masking`): half the time patches hidden, the same positions in every lead
  (`shared_time`); half the leads hidden whole, drawn uniformly among the lead sets where no hidden
  lead lies in the span of the visible ones (Einthoven/Goldberger algebra; for 12 leads: all six
  limb leads or five of them, plus precordials), so 75 % of the tokens are hidden.

What the tests check of the paper's claims (tests/ecg): STDM leaves no hidden token that lead
algebra recovers from the visible ones on signals with real lead algebra, where per-token random
masking at the same ratio leaves ~18 % recoverable, and it hides whole leads and whole time spans
at the stated ratios (test_dual_masking); FDA perturbs the weak bands and spares the dominant
ones, with a probability that follows importance, and keeps the lead algebra
(test_frequency_augment); each view is reconstructed conditioned on the other view's global
representation, and both terms train the encoder (test_core).
"""

from __future__ import annotations

from torch import Tensor, nn

from medssl.ssl.contrastive import NTXentLoss
from medssl.ssl.mae import PatchDecoder, PatchMask, masked_patch_loss
from medssl.ssl.random import step_generator


class CoReECG(nn.Module):
    """forward(x, *, step, rank) -> scalar loss; `losses` also returns the two terms.

    encoder: an `EcgLeadViT`-like encoder (encode / pool / norm / patchify). decoder: a
    `PatchDecoder` built with cond_dim = encoder.embed_dim. projector: (B, D) -> (B, d_proj).
    augment: callable (x, generator) -> view. masker: callable (B, L, T, generator) -> PatchMask.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: PatchDecoder,
        projector: nn.Module,
        augment,
        masker,
        *,
        temperature: float = 0.1,
        w_con: float = 1.0,
        w_rec: float = 1.0,
        norm_target: bool = True,
        cross_condition: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if w_con < 0 or w_rec < 0 or w_con + w_rec == 0:
            raise ValueError(f"loss weights must be non-negative and not both zero, got w_con={w_con}, w_rec={w_rec}")
        self.encoder = encoder
        self.decoder = decoder
        self.projector = projector
        self.augment = augment
        self.masker = masker
        self.contrastive = NTXentLoss(temperature)
        self.w_con = float(w_con)
        self.w_rec = float(w_rec)
        self.norm_target = norm_target
        self.cross_condition = cross_condition
        self.seed = seed

    def sample(self, x: Tensor, step: int = 0, rank: int = 0) -> tuple[Tensor, Tensor, PatchMask, PatchMask]:
        """The two augmented views and their masks for this (seed, step, rank)."""
        g = step_generator(self.seed, step, rank)
        v1, v2 = self.augment(x, g), self.augment(x, g)
        b, n_leads, n_time = x.shape[0], self.encoder.n_leads, self.encoder.n_time
        m1 = self.masker(b, n_leads, n_time, g).to(x.device)
        m2 = self.masker(b, n_leads, n_time, g).to(x.device)
        return v1, v2, m1, m2

    def losses(self, x: Tensor, *, step: int = 0, rank: int = 0) -> dict[str, Tensor]:
        """{"loss", "contrastive", "reconstruction"}, scalars."""
        v1, v2, m1, m2 = self.sample(x, step, rank)
        h1 = self.encoder.encode(v1, m1.keep_leads, m1.keep_time)
        h2 = self.encoder.encode(v2, m2.keep_leads, m2.keep_time)
        g1, g2 = self.encoder.pool(h1), self.encoder.pool(h2)
        con = self.contrastive(self.projector(g1), self.projector(g2))

        target = self.encoder.patchify(x).float()
        c1, c2 = (g2[:, None], g1[:, None]) if self.cross_condition else (g1[:, None], g2[:, None])
        p1 = self.decoder(self.encoder.norm(h1), m1.keep_leads, m1.keep_time, cond=c1)
        p2 = self.decoder(self.encoder.norm(h2), m2.keep_leads, m2.keep_time, cond=c2)
        rec = 0.5 * (
            masked_patch_loss(p1.float(), target, m1.masked, norm_target=self.norm_target)
            + masked_patch_loss(p2.float(), target, m2.masked, norm_target=self.norm_target)
        )
        return {"loss": self.w_con * con + self.w_rec * rec, "contrastive": con, "reconstruction": rec}

    def forward(self, x: Tensor, *, step: int = 0, rank: int = 0) -> Tensor:
        return self.losses(x, step=step, rank=rank)["loss"]

