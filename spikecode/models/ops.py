"""The mathematics of the GLA-SWA model as pure functions (SPEC §7).

RMSNorm, the rotate-half rotary embedding, causal sliding-window softmax attention and
gated linear attention in its recurrent and chunked forms. The modules of
:mod:`spikecode.models.gla_swa` only project, reshape and call these.

Numerics: everything runs in the compute dtype of ``spikecode.models.config.compute_dtype``
(float64 for float64 input, float32 otherwise), as the released kernels accumulate.
"""

from __future__ import annotations

import torch

from spikecode.models.config import compute_dtype

__all__ = [
    "apply_rotary",
    "gla_chunked",
    "gla_recurrent",
    "rms_norm",
    "rotary_angles",
    "rotate",
    "sliding_window_attention",
]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm ``x / sqrt(mean(x², last axis) + eps) * weight`` (SPEC §7).

    Parameters
    ----------
    x
        ``[..., d]``, any float dtype.
    weight
        ``[d]``.
    eps
        Added to the mean square.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``; computed in the compute dtype.
    """
    compute = compute_dtype(x.dtype)
    xc = x.to(compute)
    y = xc * torch.rsqrt(xc.square().mean(-1, keepdim=True) + eps)
    return (y * weight.to(compute)).to(x.dtype)


def rotary_angles(
    positions: torch.Tensor, d: int, theta: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The rotary angles ``p · theta^(-2j/d)``, repeated over both halves (SPEC §7).

    Computed as the release's ``RotaryEmbedding`` does: ``inv_freq`` from an integer
    ``arange`` widened to float32, the product with the float32 positions (``dtype``
    float64 does the same in float64, for float64 models).

    Parameters
    ----------
    positions
        ``[seq]`` or ``[batch, seq]`` integer positions.
    d
        ``head_dim`` (even).
    theta
        Rotary base (``rope_theta``).
    dtype
        float32 (the release) or float64.

    Returns
    -------
    torch.Tensor
        ``[seq, d]`` or ``[batch, 1, seq, d]`` in ``dtype`` (the batch form broadcasts
        over heads).
    """
    steps = torch.arange(0, d, 2, device=positions.device, dtype=torch.int64).to(dtype)
    inv_freq = 1.0 / (theta ** (steps / d))
    angles = positions.to(dtype)[..., None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles if positions.dim() == 1 else angles[:, None]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x·cos + rotate_half(x)·sin`` with ``rotate_half([a, b]) = [-b, a]``, in ``x``'s dtype."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding in the rotate-half form (SPEC §7).

    ``x·cos + rotate_half(x)·sin`` with ``rotate_half([a, b]) = [-b, a]`` and angle
    ``p · theta^(-2j/d)`` repeated over both halves. The angles, cosines and sines are
    float32 (as in the release, which computes them in float32 whatever the model's
    dtype); ``x``'s dtype sets where the rest rounds: float32 for the compute dtype, or
    bfloat16 where the release rounds (its cos/sin cast to the model dtype, the products
    and the sum in it).

    Parameters
    ----------
    x
        ``[batch, heads, seq, d]`` (or ``[..., seq, d]`` with 1-D ``positions``) with ``d``
        even.
    positions
        ``[seq]`` positions shared by every row, or ``[batch, seq]`` per row (left
        padding: the release's ``position_ids``).
    theta
        Rotary base (``rope_theta``).

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``.
    """
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    angles = rotary_angles(positions, x.shape[-1], theta, wide)
    return rotate(x, angles.cos().to(x.dtype), angles.sin().to(x.dtype))


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int,
    scale: float,
    key_mask: torch.Tensor | None = None,
    block_size: int = 256,
) -> torch.Tensor:
    """Causal softmax attention where query ``i`` sees keys ``i - window … i`` (SPEC §7).

    Grouped-query heads: every one of the ``G`` query heads of a group reads the same
    key/value head. Queries are processed in blocks so that memory grows with
    ``block_size · (block_size + window)``, not with ``seq²``.

    The queries are the **last** ``q_len`` positions of the keys' sequence (all of them
    in a full forward pass; the new tokens after a cached past when decoding), so query
    ``i`` sits at key position ``k_len - q_len + i``.

    Parameters
    ----------
    q
        ``[batch, kv_heads, G, q_len, d]``.
    k, v
        ``[batch, kv_heads, k_len, d]`` with ``k_len >= q_len``.
    window
        ``sliding_window``; ``window + 1`` keys at most.
    scale
        Logit scale (``head_dim ** -0.5``).
    key_mask
        Optional ``[batch, k_len]`` bool, False for keys nobody may see (padding). A
        query always sees its own key, so no row is empty.
    block_size
        Queries per block.

    Returns
    -------
    torch.Tensor
        ``[batch, kv_heads, G, q_len, d]`` in the dtype of ``q``.
    """
    q_len, k_len = q.shape[-2], k.shape[-2]
    shift = k_len - q_len
    device = q.device
    out = torch.empty_like(q)
    positions = torch.arange(k_len, device=device)
    for start in range(0, q_len, block_size):
        stop = min(start + block_size, q_len)
        first = max(0, shift + start - window)
        qpos = positions[shift + start : shift + stop, None]
        kpos = positions[None, first : shift + stop]
        allowed = (kpos <= qpos) & (kpos >= qpos - window)
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, None, first : shift + stop]
            allowed = allowed | (kpos == qpos)
        scores = torch.einsum(
            "bhgqd,bhkd->bhgqk", q[..., start:stop, :], k[:, :, first : shift + stop]
        )
        scores = (scores * scale).masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[..., start:stop, :] = torch.einsum(
            "bhgqk,bhkd->bhgqd", probs, v[:, :, first : shift + stop]
        )
    return out


def gla_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    *,
    scale: float,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention, token by token (SPEC §7).

    Per key/value head: ``S_t = diag(exp(g_t)) S_{t-1} + k_tᵀ v_t`` and, for each of the
    ``G`` query heads sharing it, ``o_t = scale · q_t S_t``.

    Parameters
    ----------
    q
        ``[batch, kv_heads, G, seq, dk]``.
    k, g
        ``[batch, kv_heads, seq, dk]``; ``g`` is the log decay (``≤ 0``).
    v
        ``[batch, kv_heads, seq, dv]``.
    scale
        Output scale (``head_dim ** -0.5``).
    initial_state
        ``[batch, kv_heads, dk, dv]``, zeros when None.

    Returns
    -------
    tuple of torch.Tensor
        ``o`` ``[batch, kv_heads, G, seq, dv]`` and the final state
        ``[batch, kv_heads, dk, dv]``.
    """
    batch, heads, groups, seq, dk = q.shape
    dv = v.shape[-1]
    state = q.new_zeros(batch, heads, dk, dv) if initial_state is None else initial_state.clone()
    out = q.new_empty(batch, heads, groups, seq, dv)
    decay = g.exp()
    for t in range(seq):
        state = decay[:, :, t, :, None] * state + k[:, :, t, :, None] * v[:, :, t, None, :]
        out[:, :, :, t] = scale * torch.einsum("bhgd,bhde->bhge", q[:, :, :, t], state)
    return out, state


def gla_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    *,
    scale: float,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention in block-parallel form; the same function as :func:`gla_recurrent`.

    Within a chunk, with ``b_t = Σ_{s≤t} g_s`` (cumulative log decay from the chunk start)
    and ``S`` the state entering the chunk::

        o_t   = scale · [(q_t ⊙ e^{b_t}) S + Σ_{s≤t} (Σ_d q_td k_sd e^{b_td − b_sd}) v_s]
        S_new = diag(e^{b_C}) S + Σ_s (k_s ⊙ e^{b_C − b_s})ᵀ v_s

    Every exponent is ``≤ 0`` (gates are log decays), so no factor can overflow however
    strong the decay; the price is a ``[chunk, chunk, dk]`` decay tensor per head.

    Parameters
    ----------
    q, k, v, g, scale, initial_state
        As in :func:`gla_recurrent`.
    chunk_size
        Tokens per chunk.

    Returns
    -------
    tuple of torch.Tensor
        ``o`` ``[batch, kv_heads, G, seq, dv]`` and the final state.
    """
    batch, heads, groups, seq, dk = q.shape
    dv = v.shape[-1]
    state = q.new_zeros(batch, heads, dk, dv) if initial_state is None else initial_state.clone()
    out = q.new_empty(batch, heads, groups, seq, dv)
    for start in range(0, seq, chunk_size):
        stop = min(start + chunk_size, seq)
        length = stop - start
        qc, kc, vc = q[:, :, :, start:stop], k[:, :, start:stop], v[:, :, start:stop]
        b = torch.cumsum(g[:, :, start:stop], dim=2)
        inter = torch.einsum("bhgtd,bhde->bhgte", qc * b.exp()[:, :, None], state)
        causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        diff = (b[:, :, :, None, :] - b[:, :, None, :, :]).masked_fill(
            ~causal[:, :, None], float("-inf")
        )
        scores = torch.einsum("bhgtd,bhsd,bhtsd->bhgts", qc, kc, diff.exp())
        intra = torch.einsum("bhgts,bhse->bhgte", scores, vc)
        out[:, :, :, start:stop] = scale * (inter + intra)
        last = b[:, :, -1]
        state = last.exp()[..., None] * state + torch.einsum(
            "bhsd,bhse->bhde", kc * (last[:, :, None] - b).exp(), vc
        )
    return out, state
