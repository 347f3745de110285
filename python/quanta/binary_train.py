"""Learned recurrent binarizers (BEBR's embedding-to-embedding training), with PyTorch.

Only training needs PyTorch (``pip install "quanta[train]"``): the result is a
:class:`quanta.RecurrentBinarizer` holding plain float32 arrays (BatchNorm folded into the
linear layers), so encoding and search never import it.

The model is BEBR's recurrent head (Gan et al., KDD 2023): ``first`` maps x to the level-0
pre-activations, and each further level reconstructs x from the code so far (``recon``, scaled
to unit norm when ``normalize_reconstruction``) and binarizes the projected residual
(``resid``). Signs are +1 for >= 0; gradients pass straight through where |pre-activation|
<= 1. Two losses:
  * with pairs (x[i], pairs[i]) (e.g. query and document, image and caption): BEBR's, cosine
    logits of the binary codes over a temperature, each anchor against its positive and its
    hardest in-batch negatives, in both directions;
  * without (embedding to embedding): the codes' cosine ranking of each anchor's candidates
    (its nearest float neighbours plus random rows) is fitted to the float one (KL divergence
    of the two softmax distributions), so the codes keep the float neighbourhoods.
"""
from __future__ import annotations

import numpy as np

from ._validate import as_f32_matrix


def _require_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("learned binarizers need PyTorch: pip install 'quanta[train]'") from e
    return torch


def fit_learned(binarizer, x, pairs=None, *, hidden: int = 0, epochs: int = 5,
                batch_size: int = 256, lr: float = 3e-4, momentum: float = 0.9,
                weight_decay: float = 0.0, tau: float = 0.05, hard_negatives: int = 5,
                neighbors: int = 63, normalize_reconstruction: bool | None = None,
                max_train_points: int = 100_000, progress: bool = False):
    """Trains ``binarizer``'s transforms (see RecurrentBinarizer.fit_learned)."""
    torch = _require_torch()
    from . import FlatIndex

    x = as_f32_matrix(x, binarizer.dim, "x")
    if pairs is not None:
        pairs = as_f32_matrix(pairs, binarizer.dim, "pairs")
        if pairs.shape[0] != x.shape[0]:
            raise ValueError(f"pairs must have one row per row of x ({x.shape[0]}); got "
                             f"{pairs.shape[0]}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("neighbors", neighbors)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {v!r}")
    if x.shape[0] < 2 * (hard_negatives + 1):
        raise ValueError(f"fit_learned: {x.shape[0]} vectors are too few")
    normalize = hidden > 0 if normalize_reconstruction is None else bool(normalize_reconstruction)
    rng = np.random.default_rng(binarizer.seed)
    if x.shape[0] > max_train_points:
        keep = np.sort(rng.choice(x.shape[0], max_train_points, replace=False))
        x = x[keep]
        pairs = None if pairs is None else pairs[keep]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if pairs is None:  # candidates: each row's float neighbours (embedding to embedding)
        nn = FlatIndex(binarizer.dim, "ip")
        nn.add(x)
        neigh = nn.search(x, min(neighbors + 1, x.shape[0])).ids
    else:
        pairs = pairs / np.maximum(np.linalg.norm(pairs, axis=1, keepdims=True), 1e-12)
    torch.manual_seed(binarizer.seed)
    model = _make_head(torch, binarizer, hidden, normalize)
    if hidden == 0:  # start from the closed-form solution
        binarizer.fit(x)
        model.load_linear(binarizer._b.transforms())
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(0.6 * epochs)), gamma=0.1)
    xt = torch.from_numpy(x)
    pt = None if pairs is None else torch.from_numpy(pairs.astype(np.float32))
    n = x.shape[0]
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(n)
        total = 0.0
        for b0 in range(0, n - 1, batch_size):
            idx = order[b0:b0 + batch_size]
            if len(idx) < hard_negatives + 2:
                continue
            if pt is None:
                cand = np.concatenate([neigh[idx], rng.integers(0, n, neigh.shape)[:len(idx)]], 1)
                loss = _ranking_loss(torch, model, xt[torch.from_numpy(idx)],
                                     xt[torch.from_numpy(cand)], tau)
            else:
                loss = _pair_loss(torch, model(xt[torch.from_numpy(idx)]),
                                  model(pt[torch.from_numpy(idx)]), tau, hard_negatives)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        if progress:
            print(f"fit_learned: epoch {epoch + 1}/{epochs} loss {total / n:.4f}")
    model.eval()
    first, recon, resid = model.export()
    binarizer.set_transforms(first, recon, resid, normalize_reconstruction=normalize)
    return binarizer


def _ranking_loss(torch, model, a, cand, tau):
    """KL divergence from the float softmax ranking of each anchor's candidates (b, c, d) to
    the codes' one."""
    nb, nc, d = cand.shape
    target = torch.log_softmax(torch.einsum("bd,bkd->bk", a, cand) / tau, dim=1)
    ca = torch.nn.functional.normalize(model(a), dim=1)
    cc = torch.nn.functional.normalize(model(cand.reshape(nb * nc, d)), dim=1).reshape(nb, nc, -1)
    scores = torch.log_softmax(torch.einsum("bm,bkm->bk", ca, cc) / tau, dim=1)
    return torch.nn.functional.kl_div(scores, target, log_target=True, reduction="batchmean")


def _pair_loss(torch, a, b, tau, hard):
    """BEBR's rbe loss: row i of a and b is a positive pair; each anchor competes against its
    positive and its `hard` hardest in-batch negatives, in both directions."""
    a = torch.nn.functional.normalize(a, dim=1)
    b = torch.nn.functional.normalize(b, dim=1)
    logits = a @ b.T / tau
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    loss = 0
    for lg in (logits, logits.T):
        pos = lg.diagonal().unsqueeze(1)
        neg = lg.masked_fill(eye, float("-inf")).topk(hard, dim=1).values
        loss = loss + torch.nn.functional.cross_entropy(
            torch.cat([pos, neg], dim=1), torch.zeros(n, dtype=torch.long))
    return loss


def _sign_ste(torch):
    """sign (>= 0 -> +1) forward; the gradient passes where |input| <= 1."""
    class Sign(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))

        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            return g * (z.abs() <= 1).to(g.dtype)
    return Sign.apply


def _mlp(torch, d_in, d_out, hidden):
    if hidden == 0:
        return torch.nn.Sequential(torch.nn.Linear(d_in, d_out))
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.BatchNorm1d(hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, d_out))


def _make_head(torch, binarizer, hidden, normalize):
    """The recurrent head as a torch module (the class is made here: torch stays optional)."""
    sign = _sign_ste(torch)
    m, dim, levels = binarizer.bits, binarizer.dim, binarizer.levels

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = _mlp(torch, dim, m, hidden)
            self.recon = torch.nn.ModuleList([_mlp(torch, m, dim, hidden) for _ in range(levels)])
            self.resid = torch.nn.ModuleList([_mlp(torch, dim, m, hidden) for _ in range(levels)])

        def forward(self, x):
            b = sign(self.first(x))
            for i in range(levels):
                xh = self.recon[i](b)
                if normalize:
                    xh = torch.nn.functional.normalize(xh, dim=1)
                b = b + 0.5 ** (i + 1) * sign(self.resid[i](x - xh))
            return b

        def load_linear(self, transforms):
            first, recon, resid, _ = transforms
            with torch.no_grad():
                for seq, t in [(self.first, first)] + list(zip(self.recon, recon)) + \
                        list(zip(self.resid, resid)):
                    w, b, _ = t[0]
                    seq[0].weight.copy_(torch.from_numpy(w))
                    seq[0].bias.copy_(torch.from_numpy(b) if b.size else torch.zeros(w.shape[0]))

        def export(self):
            conv = [_export_mlp(seq) for seq in [self.first, *self.recon, *self.resid]]
            return conv[0], conv[1:1 + levels], conv[1 + levels:]

    return Head()


def _export_mlp(seq):
    """(w, b, relu) layers of a Linear[-BatchNorm-ReLU-Linear] stack, BatchNorm folded in."""
    mods = list(seq)
    layers = []
    i = 0
    while i < len(mods):
        lin = mods[i]
        w = lin.weight.detach().double().numpy()
        b = lin.bias.detach().double().numpy()
        relu = False
        if i + 1 < len(mods) and mods[i + 1].__class__.__name__ == "BatchNorm1d":
            bn = mods[i + 1]
            s = (bn.weight.detach().double() / (bn.running_var.detach().double() + bn.eps).sqrt()).numpy()
            w = w * s[:, None]
            b = (b - bn.running_mean.detach().double().numpy()) * s + bn.bias.detach().double().numpy()
            relu = True  # Linear-BN is always followed by ReLU here
            i += 3
        else:
            i += 1
        layers.append((w.astype(np.float32), b.astype(np.float32), relu))
    return layers
