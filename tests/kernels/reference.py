"""Float64 NumPy references for the kernels, with hand-derived gradients (no autodiff)."""

from __future__ import annotations

import numpy as np


def visible(b, t, s, causal=True, window=0, k_valid=None, q_pos=None, k_pos=None, q_seg=None, k_seg=None):
    """Boolean [b, t, s]: key visible to query (q_seg [b, t], k_seg [b, s]: only within a segment)."""
    qp = np.broadcast_to(np.arange(t), (b, t)) if q_pos is None else np.asarray(q_pos)
    kp = np.broadcast_to(np.arange(s), (b, s)) if k_pos is None else np.asarray(k_pos)
    vis = np.ones((b, t, s), bool) if k_valid is None else np.broadcast_to(np.asarray(k_valid)[:, None, :], (b, t, s))
    if causal:
        vis = vis & (kp[:, None, :] <= qp[:, :, None])
    if window:
        vis = vis & (qp[:, :, None] - kp[:, None, :] < window)
    if q_seg is not None:
        vis = vis & (np.asarray(q_seg)[:, :, None] == np.asarray(k_seg)[:, None, :])
    return vis


def _logits(qk, scale, softcap):
    """(scores, d scores / d(scale q.k)): softcap * tanh(scale qk / softcap), or scale qk without a cap."""
    z = scale * qk
    if not softcap:
        return z, np.ones_like(z)
    th = np.tanh(z / softcap)
    return softcap * th, 1.0 - th * th


def attention(q, k, v, do, scale, vis, softcap=0.0):
    """Output and gradients (o, dq, dk, dv, dscale) of sum(o * do) for o = softmax(cap(scale q k^T)) v.

    q, do [b, t, h, d]; k, v [b, s, kvh, d]; vis [b, t, s]; cap(z) = softcap tanh(z / softcap), or z
    when softcap is 0. Rows with no visible key give 0.
    """
    q, k, v, do = (np.asarray(x, np.float64) for x in (q, k, v, do))
    h, kvh = q.shape[2], k.shape[2]
    kr, vr = np.repeat(k, h // kvh, axis=2), np.repeat(v, h // kvh, axis=2)  # head i reads kv head i // groups
    qk = np.einsum("bthd,bshd->bhts", q, kr)
    mask = vis[:, None]
    scores, dcap = _logits(qk, scale, softcap)
    logits = np.where(mask, scores, -np.inf)
    m = logits.max(-1, keepdims=True)
    p = np.where(mask, np.exp(logits - np.where(np.isfinite(m), m, 0)), 0.0)
    p = p / np.maximum(p.sum(-1, keepdims=True), 1e-300)
    o = np.einsum("bhts,bshd->bthd", p, vr)
    dv = np.einsum("bhts,bthd->bshd", p, do)
    dp = np.einsum("bthd,bshd->bhts", do, vr)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True)) * dcap  # softmax Jacobian per row, then the cap's
    dq = scale * np.einsum("bhts,bshd->bthd", ds, kr)
    dk = scale * np.einsum("bhts,bthd->bshd", ds, q)
    b, s, d = k.shape[0], k.shape[1], k.shape[3]
    fold = lambda x: x.reshape(b, s, kvh, h // kvh, d).sum(3)  # noqa: E731 (GQA: sum over a kv head's group)
    return o, dq, fold(dk), fold(dv), float((ds * qk).sum())


def lse(q, k, scale, vis, softcap=0.0):
    """Natural log-sum-exp of the visible (capped) logits [b, h, t]."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    kr = np.repeat(k, q.shape[2] // k.shape[2], axis=2)
    scores, _ = _logits(np.einsum("bthd,bshd->bhts", q, kr), scale, softcap)
    logits = np.where(vis[:, None], scores, -np.inf)
    m = logits.max(-1, keepdims=True)
    return (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]


def rms_norm(x, w, dy, eps):
    """y, dx, dw of sum(y * dy) for y = x / rms(x) * w."""
    x, w, dy = (np.asarray(a, np.float64) for a in (x, w, dy))
    d = x.shape[-1]
    rstd = 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    xhat = x * rstd
    g = dy * w
    dx = rstd * (g - xhat * (g * xhat).sum(-1, keepdims=True) / d)
    return xhat * w, dx, (dy * xhat).reshape(-1, d).sum(0)
