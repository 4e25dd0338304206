"""Reference solutions of the course's exercises, for `exercises.show_solution`: the solution cell
of each exercise in notebooks/*.ipynb. Written by `bgad-lite student`; do not edit by hand.
"""

SOLUTIONS = {
    '00.1': (
        'def b_n_of(logp_normal, beta, normalizer):\n'
        '    """(n,) logp of normal points -> b_n, the β-quantile of l = logp / N (a 0-dim tensor)."""\n'
        '    ### BEGIN SOLUTION\n'
        '    l = torch.sort(logp_normal).values / normalizer  # (n,) ascending\n'
        '    return l[int(beta * len(l) + 1e-9)]  # index ⌊β·n⌋; the epsilon keeps 0.29·100 at 29\n'
        '    ### END SOLUTION'
    ),
    '00.2': (
        'def touched_points(l, is_anomaly, b_n, b_a):\n'
        '    """(M,) l = logp / N, (M,) bool -> (pulled, pushed), each (M,) bool."""\n'
        '    ### BEGIN SOLUTION\n'
        '    pulled = ~is_anomaly & (l <= b_n)  # normals at or below b_n\n'
        '    pushed = is_anomaly & (l >= b_a)  # anomalies at or above b_a\n'
        '    return pulled, pushed\n'
        '    ### END SOLUTION'
    ),
    '01.1': (
        'def fibers_of(features):\n'
        '    """(n, C, H, W) feature maps -> (n·H·W, C) fibers, image-major, then row, then column."""\n'
        '    ### BEGIN SOLUTION\n'
        '    n, c, h, w = features.shape\n'
        '    return features.permute(0, 2, 3, 1).reshape(n * h * w, c)  # (n, H, W, C) -> (n·H·W, C)\n'
        '    ### END SOLUTION'
    ),
    '01.2': (
        'from scipy import ndimage\n'
        '\n'
        'def fiber_labels(mask, height, width):\n'
        '    """(S, S) bool pixel mask -> (height, width) bool: True where ≥ half of the cell is defect, and in the\n'
        '    most-covered cell of every defect region that reaches half in no cell."""\n'
        '    ### BEGIN SOLUTION\n'
        '    sh, sw = mask.shape[0] // height, mask.shape[1] // width  # pixels per cell side\n'
        '\n'
        '    def fraction(m):  # (S, S) bool -> (H, W) fraction of each cell covered by m\n'
        '        return m.reshape(height, sh, width, sw).float().mean(dim=(1, 3))\n'
        '\n'
        '    anomalous = fraction(mask) >= 0.5  # rule 1: half the cell\n'
        '    regions, n = ndimage.label(mask.numpy())  # (S, S) region numbers 1..n, 0 = no defect\n'
        '    for r in range(1, n + 1):\n'
        '        f = fraction(torch.from_numpy(regions == r))\n'
        '        if not (f >= 0.5).any():  # rule 2: a small region keeps the cell it covers most\n'
        '            anomalous.view(-1)[int(f.argmax())] = True\n'
        '    return anomalous\n'
        '    ### END SOLUTION'
    ),
    '01.3': (
        'def half_sq_mahalanobis(x, mu, cov):\n'
        '    """(n, d) rows, (d,) mean, (d, d) covariance -> (n,) values of ½ (x − μ)ᵀ Σ⁻¹ (x − μ)."""\n'
        '    ### BEGIN SOLUTION\n'
        '    d = x - mu  # (n, d)\n'
        '    return 0.5 * np.einsum("nd,nd->n", d, np.linalg.solve(cov, d.T).T)\n'
        '    ### END SOLUTION'
    ),
    '02.1': (
        'import math\n'
        '\n'
        'def encoding_at(P, h, w):\n'
        '    """(P,) sin/cos encoding of the position (row h, column w)."""\n'
        '    ### BEGIN SOLUTION\n'
        '    i = torch.arange(P // 4, dtype=torch.float32)\n'
        '    omega = 10000.0 ** (-2 * i / (P // 2))  # (P/4,)\n'
        '    def pairs(v):  # sin, cos interleaved: (P/2,)\n'
        '        return torch.stack([torch.sin(v * omega), torch.cos(v * omega)], 1).reshape(-1)\n'
        '    return torch.cat([pairs(float(w)), pairs(float(h))])\n'
        '    ### END SOLUTION'
    ),
    '02.2': (
        'def my_log_likelihood(z, log_jac_det):\n'
        '    """(n, C) outputs and (n,) log|det J_f| -> (n,) log p(x) / C."""\n'
        '    ### BEGIN SOLUTION\n'
        '    C = z.shape[1]\n'
        '    return (-0.5 * C * math.log(2 * math.pi) - 0.5 * (z ** 2).sum(1) + log_jac_det) / C\n'
        '    ### END SOLUTION'
    ),
    '02.3': (
        'def my_ml_loss(logp):\n'
        '    """(n,) per-dimension log-likelihoods of normal fibers -> scalar mean(−log σ(logp))."""\n'
        '    ### BEGIN SOLUTION\n'
        '    return (-torch.nn.functional.logsigmoid(logp)).mean()\n'
        '    ### END SOLUTION'
    ),
    '02.4': (
        'import copy\n'
        'from bgad_lite.flow import LevelData\n'
        'from bgad_lite.train import make_flows\n'
        '\n'
        '# a small case: the coarsest level, 4 normal training images, an untrained flow — in float64 (see below)\n'
        'lv = prep.phase1_levels(cfg.cond_dim)[2]\n'
        'level = LevelData(lv.features[:4].double(), lv.masks[:4], lv.pos.double())  # (4, C, H, W), (4, H, W) all False, (P, H, W)\n'
        'flow0 = make_flows(prep.channels, cfg.cond_dim, cfg.n_blocks, cfg.seed)[2].double()\n'
        '\n'
        'def phase1_step(flow, level, lr):\n'
        '    """One phase-1 optimizer step on every fiber of `level`; returns the stepped copy of `flow`."""\n'
        "    flow = copy.deepcopy(flow).train()  # never change the caller's flow\n"
        '    opt = torch.optim.Adam(flow.parameters(), lr=lr)\n'
        '    ### BEGIN SOLUTION\n'
        '    x, c, _ = to_fibers(level.features, level.pos)  # (n·H·W, C) fibers, (n·H·W, P) conditions\n'
        '    z, log_jac_det = flow(x, c=[c])  # z (n·H·W, C), log|det J_f| (n·H·W,)\n'
        '    logp = log_likelihood(z, log_jac_det)  # (n·H·W,) per-dimension log-likelihood\n'
        '    loss = ml_loss(logp)  # L_ml = mean(−log σ(logp)); every phase-1 fiber is normal\n'
        '    opt.zero_grad()\n'
        '    loss.backward()\n'
        '    opt.step()\n'
        '    ### END SOLUTION\n'
        '    return flow'
    ),
    '03.1': (
        'def my_boundaries(logp, is_anomaly, beta, tau, normalizer):\n'
        '    """(M,) logp, (M,) bool -> (b_n, b_a): the β-quantile of the normal l = logp / N, and b_n − τ."""\n'
        '    ### BEGIN SOLUTION\n'
        '    normal = torch.sort(logp[~is_anomaly]).values  # (n_normal,) ascending\n'
        '    index = int(beta * len(normal) + 1e-9)  # ⌊β·n_normal⌋, robust to 0.29·100 = 28.999…\n'
        '    b_n = normal[index] / normalizer\n'
        '    return b_n, b_n - tau\n'
        '    ### END SOLUTION'
    ),
    '03.2': (
        'def rates_below(l_normal, l_anomalous, boundary):\n'
        '    """Flag l < boundary: (fraction of normals flagged, fraction of anomalies flagged)."""\n'
        '    ### BEGIN SOLUTION\n'
        '    return float(np.mean(np.asarray(l_normal) < boundary)), float(np.mean(np.asarray(l_anomalous) < boundary))\n'
        '    ### END SOLUTION'
    ),
    '03.3': (
        'def chunk_boundaries_of(logp, is_anomaly, chunk, beta):\n'
        '    """b_n of every consecutive chunk of `chunk` fibers that holds a normal fiber (a list of floats)."""\n'
        '    ### BEGIN SOLUTION\n'
        '    out = []\n'
        '    for s in range(0, len(logp), chunk):\n'
        '        lp, a = logp[s:s + chunk], is_anomaly[s:s + chunk]\n'
        '        if (~a).any():\n'
        '            out.append(float(compute_boundaries(lp, a, beta, cfg.tau, N)[0]))\n'
        '    return out\n'
        '    ### END SOLUTION'
    ),
    '04.1': (
        'def my_pull_push(logp, is_anomaly, b_n, b_a, normalizer):\n'
        '    """(M,) logp, (M,) bool, two boundaries on l -> (pull, push), each 0 for an empty selection."""\n'
        '    ### BEGIN SOLUTION\n'
        '    l = logp / normalizer\n'
        '    pulled = l[~is_anomaly & (l <= b_n)]  # normals at or below b_n\n'
        '    pushed = l[is_anomaly & (l >= b_a)]  # anomalies at or above b_a\n'
        '    pull = (b_n - pulled).mean() if len(pulled) else torch.zeros(())\n'
        '    push = (pushed - b_a).mean() if len(pushed) else torch.zeros(())\n'
        '    return pull, push\n'
        '    ### END SOLUTION'
    ),
    '04.2': (
        'def my_naive_push(logp, is_anomaly, normalizer):\n'
        '    """mean over anomalous fibers of −log σ(−logp / N); 0 without anomalies."""\n'
        '    ### BEGIN SOLUTION\n'
        '    l = logp[is_anomaly] / normalizer\n'
        '    return (-torch.nn.functional.logsigmoid(-l)).mean() if len(l) else torch.zeros(())\n'
        '    ### END SOLUTION'
    ),
    '04.3': (
        'import copy\n'
        'from bgad_lite.flow import log_likelihood, to_fibers\n'
        'from bgad_lite.flow import LevelData\n'
        '\n'
        'lv = prep.phase2_levels(cfg.cond_dim)[1]  # normal training images first, then the synthesised anomalies\n'
        'n_train = len(prep.train_images)\n'
        'most = n_train + torch.argsort(lv.masks[n_train:].flatten(1).sum(1), descending=True)[:8]\n'
        'pick = torch.cat([torch.arange(2), most])  # 2 normal images + the 8 anomalous images with the most anomalous fibers\n'
        'level = LevelData(lv.features[pick].double(), lv.masks[pick], lv.pos.double())  # (10, C, H, W), (10, H, W) labels, (P, H, W)\n'
        'print(f"the batch: {int(level.masks.sum())} anomalous and {int((~level.masks).sum())} normal fibers")\n'
        '\n'
        'def bgad_step(flow, level, cfg):\n'
        '    """One BGAD optimizer step on every fiber of `level`, per-batch boundary; returns the stepped copy."""\n'
        "    flow = copy.deepcopy(flow).train()  # never change the caller's flow\n"
        '    opt = torch.optim.Adam(flow.parameters(), lr=cfg.lr)\n'
        '    ### BEGIN SOLUTION\n'
        '    x, c, is_anomaly = to_fibers(level.features, level.pos, level.masks)  # (M, C), (M, P), (M,) bool\n'
        '    z, log_jac_det = flow(x, c=[c])\n'
        '    logp = log_likelihood(z, log_jac_det)  # (M,)\n'
        "    b_n, b_a = compute_boundaries(logp, is_anomaly, cfg.beta, cfg.tau, cfg.normalizer)  # this batch's normals only\n"
        '    pull, push = bg_spp_loss(logp, is_anomaly, b_n, b_a, cfg.normalizer)\n'
        '    loss = ml_loss(logp[~is_anomaly]) + cfg.bgspp_lambda * (pull + push)\n'
        '    opt.zero_grad()\n'
        '    loss.backward()\n'
        '    opt.step()\n'
        '    ### END SOLUTION\n'
        '    return flow'
    ),
    '04.4': (
        'def my_focal_weights(l, is_anomaly):\n'
        '    """(M,) l = logp / N, (M,) bool -> (M,) asymmetric focal weights."""\n'
        '    ### BEGIN SOLUTION\n'
        '    w_normal = torch.where(l > -0.2, torch.ones_like(l), 11.7 * (1 - torch.exp(l)).sqrt() * l.abs())\n'
        '    w_anomalous = torch.where(l <= -1, torch.ones_like(l), 0.53 * (1 + torch.exp(l)) ** 2 / l.abs())\n'
        '    return torch.where(is_anomaly, w_anomalous, w_normal)\n'
        '    ### END SOLUTION'
    ),
    '05.1': (
        'def image_score(maps, top):\n'
        '    """(n, S, S) anomaly maps -> (n,) image scores: the mean of the k = max(1, round(top·S·S))\n'
        '    highest pixels of each map."""\n'
        '    ### BEGIN SOLUTION\n'
        '    flat = np.asarray(maps).reshape(len(maps), -1)  # (n, S·S)\n'
        '    k = max(1, round(top * flat.shape[1]))\n'
        '    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)\n'
        '    ### END SOLUTION'
    ),
    '05.2': (
        'def rates_at_threshold(scores, groups, t):\n'
        '    """Flag score ≥ t -> {"fpr": ..., "tpr_seen": ..., "tpr_unseen": ...} (NaN for an empty group)."""\n'
        '    ### BEGIN SOLUTION\n'
        '    flagged = np.asarray(scores) >= t\n'
        '    def rate(group):\n'
        '        sel = np.asarray(groups) == group\n'
        '        return float(flagged[sel].mean()) if sel.any() else float("nan")\n'
        '    return {"fpr": rate("normal"), "tpr_seen": rate("seen"), "tpr_unseen": rate("unseen")}\n'
        '    ### END SOLUTION'
    ),
    '05.3': (
        'def margin_fractions(l, b_n, b_a):\n'
        '    """(M,) values of l -> {"below_ba": ..., "margin": ..., "above_bn": ...} fractions."""\n'
        '    ### BEGIN SOLUTION\n'
        '    l = np.asarray(l)\n'
        '    return {"below_ba": float((l < b_a).mean()), "margin": float(((l >= b_a) & (l <= b_n)).mean()),\n'
        '            "above_bn": float((l > b_n).mean())}\n'
        '    ### END SOLUTION'
    ),
}
