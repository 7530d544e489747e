"""Differentiable latent demixing: one K×M matrix W_d per latent bin d (design §3.3, §4.3, §11.1).

The lifted latent z (B, M, D, T) is modelled per bin d as an over-determined linear mixture
z_{:,d,t} = A_d s_{:,d,t} + n_{d,t} (design §4.2) and separated by μ_{:,d,t} = W_d z_{:,d,t}
(``apply_demixing``). W_d is estimated blindly inside the network by unrolled, differentiable
iterations of

* ``auxiva_demix``: over-determined AuxIVA with iterative-projection (IP) updates and OverIVA
  background rows (Ono 2011; Scheibler & Ono 2019), real-valued;
* ``iss_demix``: the inverse-free iterative-source-steering variant (Scheibler & Ono 2020);

or predicted from second-order statistics by a small network (``PredictedDemixer``).

Source model (IVA, design §4.3): source k's block y_{k,:,t} = (y_{k,1,t}, ..., y_{k,D,t}) is
spherical with norm r_{k,t} = ‖y_{k,:,t}‖₂; the auxiliary-function weights are
φ_{k,t} = G′(r)/r, i.e. φ = 1/r (Laplace, G(r) = r) or φ = D/r² (time-varying Gauss,
G(r) = D log r). Sharing r over the D bins ties the bins together, so all W_d put the same
source on the same output row (no per-bin permutation problem).

Cost minimised over W̄_d = [W_d; U_d] (M×M, real data, hence log|det| not 2·log|det|):

    J = Σ_k E_t[G(r_{k,t})] − Σ_d log|det W̄_d|.

Numerical safeguards (design §0, measured with 0 NaN in ≈2,900 training steps):
the latent is first normalised by its RMS per example (so W is scale-invariant and μ = W z is
scale-equivariant; an all-zero input gives a finite W and μ = 0), trace-relative loading
1e-3·tr(·)/M on C_d and every V_{k,d}, r ≥ 1e-3 via r = √(‖y‖² + 1e-6), √(wᵀVw) ≥ 1e-5 and
1e-6 loading on the K×K background solve. All solves are (B, D, M, M) with M ≤ 8.

Initialisation: identity rows (W_d = [I_K, 0]) or a given W₀, never PCA (design §0: PCA init
leaves bins permuted after few iterations). Identity init needs no projection back; the
decoder learns the per-bin gains. ``projection_back`` is provided for evaluation.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "auxiva_demix",
    "iss_demix",
    "apply_demixing",
    "covariance",
    "projection_back",
    "PredictedDemixer",
]

_LOAD_REL = 1e-3     # trace-relative diagonal loading of C_d and V_{k,d}
_LOAD_ABS = 1e-8     # absolute loading (only matters for an all-zero latent)
_R_MIN = 1e-3        # floor of the block norm r (data normalised to unit RMS)
_NORM_MIN = 1e-5     # floor of √(wᵀVw)
_BG_LOAD = 1e-6      # loading of the K×K background solve
_SCALE_EPS = 1e-12   # RMS normalisation floor


def small_solve(A: Tensor, B: Tensor) -> Tensor:
    """X with A X = B for small square A (..., M, M), B (..., M, R), by Gauss-Jordan elimination
    with partial pivoting, unrolled over the M columns: only ops that ONNX has. → (..., M, R)."""
    M = A.shape[-1]
    aug = torch.cat([A, B.to(A)], dim=-1)  # (..., M, M + R)
    rows = torch.arange(M, device=A.device)
    for j in range(M):
        col = aug[..., :, j].abs().masked_fill(rows < j, -1.0)  # (..., M); done rows never pivot
        p = col.argmax(dim=-1, keepdim=True)  # (..., 1)
        swap = torch.where(rows == j, p, torch.where(rows == p, j, rows))  # (..., M)
        aug = torch.gather(aug, -2, swap[..., None].expand(aug.shape))  # rows j and p swapped
        pivot_row = aug[..., j:j + 1, :] / aug[..., j:j + 1, j:j + 1]  # (..., 1, M + R)
        e_j = (rows == j).to(A.dtype)[:, None]  # (M, 1)
        aug = aug - (aug[..., :, j:j + 1] - e_j) * pivot_row  # row j <- pivot row, others cleared
    return aug[..., :, M:]


def solve(A: Tensor, B: Tensor) -> Tensor:
    """``torch.linalg.solve``; while ``torch.export`` traces (ONNX export: ONNX has no solve
    operator) the unrolled :func:`small_solve`, tested equal to it."""
    if torch.compiler.is_exporting():
        return small_solve(A, B)
    return torch.linalg.solve(A, B)


def _check_inputs(z: Tensor, n_sources: int, n_iter: int, init: Tensor | None, name: str) -> None:
    if z.dim() != 4:
        raise ValueError(f"{name}: expected z of shape (B, M, D, T), got {tuple(z.shape)}")
    B, M, D, T = z.shape
    if not 1 <= n_sources <= M:
        raise ValueError(f"{name}: need 1 <= n_sources <= M = {M}, got n_sources={n_sources}")
    if n_iter < 0:
        raise ValueError(f"{name}: n_iter must be >= 0, got {n_iter}")
    if init is not None and tuple(init.shape) != (B, D, n_sources, M):
        raise ValueError(
            f"{name}: expected init of shape (B, D, K, M) = {(B, D, n_sources, M)}, got {tuple(init.shape)}")


def _normalise(z: Tensor) -> Tensor:
    """z / RMS(z) per example; a silent example stays zero."""
    scale = torch.sqrt(z.pow(2).mean(dim=(1, 2, 3), keepdim=True) + _SCALE_EPS)  # (B, 1, 1, 1)
    return z / scale


def _load(A: Tensor, rel: float, absolute: float = _LOAD_ABS) -> Tensor:
    """A + (rel·tr(A)/n + absolute)·I on the last two axes."""
    n = A.shape[-1]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    tr = A.diagonal(dim1=-2, dim2=-1).sum(-1)
    return A + (rel * tr / n + absolute)[..., None, None] * eye


def _outer_products(z: Tensor) -> Tensor:
    """z_{m,d,t} z_{n,d,t} for every m, n: (B, M, D, T) -> (B, M·M·D, T). The graph-export form
    of the covariances below: onnxruntime's Einsum ran them ≈5× slower (docs/design.md "Ninth
    session")."""
    B, M, D, T = z.shape
    return (z[:, :, None] * z[:, None]).reshape(B, M * M * D, T)


def covariance(z: Tensor) -> Tensor:
    """R_d = (1/T) Σ_t z_{:,d,t} z_{:,d,t}ᵀ per bin: z (B, M, D, T) -> (B, D, M, M) (the
    demixer's C_d before loading; ``lvbd.talkers``' latent statistic)."""
    B, M, D, T = z.shape
    if torch.compiler.is_exporting():
        return _outer_products(z).mean(dim=-1).reshape(B, M, M, D).permute(0, 3, 1, 2)
    return torch.einsum("bmdt,bndt->bdmn", z, z) / T


def _covariance(z: Tensor, loading: float) -> Tensor:
    """C_d = :func:`covariance`, loaded. z (B, M, D, T) -> (B, D, M, M)."""
    return _load(covariance(z), loading)


def _identity_rows(z: Tensor, n_sources: int) -> Tensor:
    B, M, D, _ = z.shape
    eye = torch.eye(M, dtype=z.dtype, device=z.device)[:n_sources]  # (K, M)
    return eye.expand(B, D, n_sources, M).clone()  # (B, D, K, M)


def _background(W: Tensor, C: Tensor) -> Tensor:
    """OverIVA background rows U_d = [J_d, −I_{M−K}] with Jᵀ = (W C E_s)⁻¹ W C E_n (design §11.1).

    They make the targets orthogonal to the background under C: W C Uᵀ = 0.
    W (B, D, K, M), C (B, D, M, M) -> U (B, D, M−K, M).
    """
    B, D, K, M = W.shape
    WC = W @ C  # (B, D, K, M)
    eye_k = torch.eye(K, dtype=W.dtype, device=W.device)
    Jt = solve(WC[..., :K] + _BG_LOAD * eye_k, WC[..., K:])  # (B, D, K, M−K)
    minus_eye = -torch.eye(M - K, dtype=W.dtype, device=W.device).expand(B, D, M - K, M - K)
    return torch.cat([Jt.transpose(-1, -2), minus_eye], dim=-1)  # (B, D, M−K, M)


def _block_weights(Y: Tensor, source_model: str) -> Tensor:
    """φ_{k,t} from the block norm r_{k,t} = ‖y_{k,:,t}‖: 1/r (Laplace) or D/r² (Gauss). Y (B, K, D, T) -> (B, K, T)."""
    D = Y.shape[2]
    r2 = Y.pow(2).sum(dim=2) + _R_MIN ** 2  # (B, K, T), r >= 1e-3
    if source_model == "laplace":
        return torch.rsqrt(r2)
    if source_model == "gauss":
        return D / r2
    raise ValueError(f"source_model must be 'laplace' or 'gauss', got {source_model!r}")


def _weighted_covariances(z: Tensor, phi: Tensor, loading: float) -> Tensor:
    """V_{k,d} = (1/T) Σ_t φ_{k,t} z_{:,d,t} z_{:,d,t}ᵀ, loaded. (B, M, D, T), (B, K, T) -> (B, K, D, M, M)."""
    B, M, D, T = z.shape
    if torch.compiler.is_exporting():  # one (M·M·D, T) @ (T, K) product per example
        V = (_outer_products(z) @ phi.transpose(1, 2)) / T  # (B, M·M·D, K)
        return _load(V.reshape(B, M, M, D, -1).permute(0, 4, 3, 1, 2), loading)
    return _load(torch.einsum("bkt,bmdt,bndt->bkdmn", phi, z, z) / T, loading)


def auxiva_demix(
    z: Tensor,
    n_sources: int,
    n_iter: int,
    source_model: str = "laplace",
    init: Tensor | None = None,
    loading: float = _LOAD_REL,
) -> Tensor:
    """Unrolled over-determined AuxIVA-IP (OverIVA when M > K), differentiable (design §4.3, §11.1).

    Per iteration (weights from the outputs at the start of the iteration, as pyroomacoustics):
      y_{k,:,t} = W_{:,k} z,  φ_{k,t} = G′(r_{k,t})/r_{k,t},
      V_{k,d} = (1/T) Σ_t φ_{k,t} z_{:,d,t} z_{:,d,t}ᵀ + 1e-3·tr/M·I,
      for k = 1..K:  w_{k,d} ← (W̄_d V_{k,d})⁻¹ e_k,  w_{k,d} ← w_{k,d} / √(w_{k,d}ᵀ V_{k,d} w_{k,d}),
                     background U_d = [J_d, −I], J_dᵀ = (W_d C_d E_s)⁻¹ W_d C_d E_n  (M > K),
    with W̄_d = [W_d; U_d] (M×M). W is estimated on z/RMS(z), which only changes its scale.

    Args:
        z: latent (B, M, D, T), real.
        n_sources: K ≤ M.
        n_iter: number of unrolled iterations (1–4 in training, ≥ 20 for blind use).
        source_model: "laplace" (φ = 1/r) or "gauss" (φ = D/r²).
        init: W₀ (B, D, K, M); None -> identity rows.
        loading: trace-relative diagonal loading of C_d and V_{k,d}. The default 1e-3 is the
            measured-stable training value (design §0); it acts as a ridge on W and costs
            accuracy on ill-conditioned determined mixtures (random 2×2 / 3×3 A_d: ≈ 21 dB vs
            ≈ 25 dB for pyroomacoustics, over-determined M = K + 2: no loss). 1e-5 matches
            pyroomacoustics AuxIVA/OverIVA within 0.1 dB.

    Returns:
        W (B, D, K, M), to be applied as μ = W_d z (``apply_demixing``).
    """
    _check_inputs(z, n_sources, n_iter, init, "auxiva_demix")
    B, M, D, T = z.shape
    K = n_sources
    zn = _normalise(z)  # (B, M, D, T)
    C = _covariance(zn, loading)  # (B, D, M, M)
    W = _identity_rows(z, K) if init is None else init.to(z)  # (B, D, K, M)
    rows = list(W.unbind(dim=2))  # K × (B, D, M)
    eye = torch.eye(M, dtype=z.dtype, device=z.device)
    U = _background(W, C) if M > K else None  # (B, D, M−K, M)
    for _ in range(n_iter):
        W = torch.stack(rows, dim=2)  # (B, D, K, M)
        Y = torch.einsum("bdkm,bmdt->bkdt", W, zn)  # (B, K, D, T)
        V = _weighted_covariances(zn, _block_weights(Y, source_model), loading)  # (B, K, D, M, M)
        for k in range(K):
            Wbar = torch.stack(rows, dim=2)  # (B, D, K, M)
            if U is not None:
                Wbar = torch.cat([Wbar, U], dim=2)  # (B, D, M, M)
            Vk = V[:, k]  # (B, D, M, M)
            rhs = eye[:, k].expand(B, D, M).unsqueeze(-1)  # (B, D, M, 1)
            w = solve(Wbar @ Vk, rhs).squeeze(-1)  # (B, D, M)
            quad = torch.einsum("bdm,bdmn,bdn->bd", w, Vk, w)  # (B, D)
            rows[k] = w / torch.sqrt(quad.clamp_min(0.0) + _NORM_MIN ** 2)[..., None]
            if U is not None:
                U = _background(torch.stack(rows, dim=2), C)
    return torch.stack(rows, dim=2)  # (B, D, K, M)


def iss_demix(
    z: Tensor,
    n_sources: int,
    n_iter: int,
    source_model: str = "laplace",
    init: Tensor | None = None,
    loading: float = _LOAD_REL,
) -> Tensor:
    """Unrolled inverse-free AuxIVA-ISS (Scheibler & Ono 2020; design §3.3 (b), §11.1).

    Over-determined case (M > K), documented choice: ISS runs on all M outputs y = W̄_d z,
    W̄_d = [W_d; U_d] (M×M), U_d the OverIVA background rows of the start point (for identity
    init: the complement of the first K channels, orthogonal to the targets under C_d), and
    the first K rows are returned. Targets use the block source model φ_{k,t}; the M − K
    background outputs use OverIVA's stationary Gaussian per bin, V_m = C_d / (w_mᵀ C_d w_m).
    Pivots run over targets *and* background, so background directions can move into the
    target rows (ISS on the targets alone would keep them in their initial span).

    Each iteration computes the weights and V_{m,d} once (as the IP variant), then for each
    pivot k = 1..M, with no matrix inverse:

      v_m = (w_mᵀ V_m w_k) / (w_kᵀ V_m w_k)  (m ≠ k),   v_k = 1 − (w_kᵀ V_k w_k)^{−1/2},
      W̄ ← W̄ − v w_kᵀ   (i.e. y ← y − v y_k).

    Working on the M×M statistics instead of the (M, D, T) outputs gives the same updates at
    O(M³·D) per pivot. V carries the same 1e-3·tr/M loading as the IP variant.

    Args / Returns: as ``auxiva_demix``.
    """
    _check_inputs(z, n_sources, n_iter, init, "iss_demix")
    B, M, D, T = z.shape
    K = n_sources
    zn = _normalise(z)  # (B, M, D, T)
    C = _covariance(zn, loading)  # (B, D, M, M)
    W = _identity_rows(z, K) if init is None else init.to(z)  # (B, D, K, M)
    if M > K:
        W = torch.cat([W, _background(W, C)], dim=2)  # (B, D, M, M)
    eye = torch.eye(M, dtype=z.dtype, device=z.device)
    for _ in range(n_iter):
        Y = torch.einsum("bdkm,bmdt->bkdt", W[:, :, :K], zn)  # (B, K, D, T)
        V = _weighted_covariances(zn, _block_weights(Y, source_model), loading)  # (B, K, D, M, M)
        if M > K:
            Wb = W[:, :, K:]  # (B, D, M−K, M)
            power = torch.einsum("bdkm,bdmn,bdkn->bkd", Wb, C, Wb)  # (B, M−K, D)
            Vb = C[:, None] / power.clamp_min(_LOAD_ABS)[..., None, None]  # (B, M−K, D, M, M)
            V = torch.cat([V, Vb], dim=1)  # (B, M, D, M, M)
        for k in range(M):
            wk = W[:, :, k]  # (B, D, M)
            Vwk = torch.einsum("bmdij,bdj->bmdi", V, wk)  # (B, M, D, M): V_m w_k
            num = torch.einsum("bdmi,bmdi->bmd", W, Vwk)  # (B, M, D): w_mᵀ V_m w_k
            den = torch.einsum("bdi,bmdi->bmd", wk, Vwk).clamp_min(1e-30)  # (B, M, D): w_kᵀ V_m w_k
            v_self = 1.0 - torch.rsqrt(den[:, k] + _NORM_MIN ** 2)  # (B, D)
            v = (num / den) * (1.0 - eye[k])[:, None] + v_self[:, None] * eye[k][:, None]  # (B, M, D)
            W = W - v.transpose(1, 2)[..., None] * wk[:, :, None, :]  # (B, D, M, M)
    return W[:, :, :K]  # (B, D, K, M)


def apply_demixing(W: Tensor, z: Tensor) -> Tensor:
    """Posterior mean μ_{:,d,t} = W_d z_{:,d,t} (design §5.1). W (B, D, K, M), z (B, M, D, T) -> (B, K, D, T)."""
    if W.dim() != 4 or z.dim() != 4 or W.shape[0] != z.shape[0] or W.shape[1] != z.shape[2] \
            or W.shape[3] != z.shape[1]:
        raise ValueError(f"apply_demixing: expected W (B, D, K, M) and z (B, M, D, T), "
                         f"got {tuple(W.shape)} and {tuple(z.shape)}")
    return torch.einsum("bdkm,bmdt->bkdt", W, z)


def projection_back(W: Tensor, z: Tensor, ref_channel: int = 0, eps: float = 1e-12) -> Tensor:
    """Minimal-distortion rescaling of each row: W_{k,d} ← c_{k,d} W_{k,d}, with
    c_{k,d} = E_t[y_{k,d,t} z_{ref,d,t}] / E_t[y_{k,d,t}²] (pyroomacoustics ``projection_back``).

    After it, μ_k estimates source k's image on latent channel ``ref_channel``.
    W (B, D, K, M), z (B, M, D, T) -> (B, D, K, M).
    """
    Y = apply_demixing(W, z)  # (B, K, D, T)
    num = (Y * z[:, ref_channel, None]).mean(-1)  # (B, K, D)
    den = Y.pow(2).mean(-1) + eps  # (B, K, D)
    return W * (num / den).transpose(1, 2)[..., None]


class PredictedDemixer(nn.Module):
    """W_d predicted from second-order statistics by an MLP shared over bins (design §3.3 (c)).

    Features of R_d = (1/T) Σ_t z_{:,d,t} z_{:,d,t}ᵀ (upper triangle, scale-free):
    log(R_{d,ii} / r̄ + 1e-6) with r̄ = mean_d tr(R_d)/M (the bin's channel energies relative to
    the example's mean) and the correlation coefficients R_{d,ij}/√(R_{d,ii} R_{d,jj}), i < j.
    Output W_d = [I_K, 0] + MLP(features_d), the last layer initialised small, so W starts
    near identity rows. W is scale-invariant, μ = W z scale-equivariant.
    """

    def __init__(self, n_latent_channels: int, n_sources: int, block_size: int, hidden: int = 64,
                 init_scale: float = 1e-2):
        super().__init__()
        if not 1 <= n_sources <= n_latent_channels:
            raise ValueError(f"PredictedDemixer: need 1 <= n_sources <= n_latent_channels, "
                             f"got K={n_sources}, M={n_latent_channels}")
        self.n_latent_channels = n_latent_channels
        self.n_sources = n_sources
        self.block_size = block_size
        M, K = n_latent_channels, n_sources
        n_features = M * (M + 1) // 2
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, K * M),
        )
        with torch.no_grad():
            self.net[-1].weight.mul_(init_scale)
            self.net[-1].bias.zero_()
        iu = torch.triu_indices(M, M, offset=1)
        self.register_buffer("triu_rows", iu[0], persistent=False)
        self.register_buffer("triu_cols", iu[1], persistent=False)
        self.register_buffer("identity_rows", torch.eye(M)[:K].clone(), persistent=False)

    def features(self, z: Tensor) -> Tensor:
        """Scale-free upper-triangle features of R_d. z (B, M, D, T) -> (B, D, M(M+1)/2)."""
        R = covariance(z)  # (B, D, M, M)
        diag = R.diagonal(dim1=-2, dim2=-1)  # (B, D, M)
        ref = diag.mean(dim=(1, 2), keepdim=True) + 1e-12  # (B, 1, 1)
        log_energy = torch.log(diag / ref + 1e-6)  # (B, D, M)
        std = torch.sqrt(diag + 1e-6 * ref)  # (B, D, M)
        corr = R[..., self.triu_rows, self.triu_cols] / (std[..., self.triu_rows] * std[..., self.triu_cols])
        return torch.cat([log_energy, corr], dim=-1)  # (B, D, M(M+1)/2)

    def forward(self, z: Tensor) -> Tensor:
        """z (B, M, D, T) -> W (B, D, K, M)."""
        if z.dim() != 4 or z.shape[1] != self.n_latent_channels:
            raise ValueError(f"PredictedDemixer: expected z of shape (B, M={self.n_latent_channels}, D, T), "
                             f"got {tuple(z.shape)}")
        B, M, D, T = z.shape
        delta = self.net(self.features(z))  # (B, D, K·M)
        return self.identity_rows.to(z) + delta.view(B, D, self.n_sources, M)  # (B, D, K, M)
