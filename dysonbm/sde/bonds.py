"""The implicit nearest-neighbour repulsion of the split scheme: a log-barrier proximal map solved by damped
Newton steps with a tridiagonal Hessian (see `dysonbm.sde.processes` for the scheme)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dysonbm.sde.numerics import _safe_recip

Array = jax.Array


class Couplings(NamedTuple):
    """Per-step couplings of the implicit part (already multiplied by the step τ).

    gap: (N−1,) c_i of −Σ c_i log(y_{i+1} − y_i) (chiral: also of −Σ c_i log(y_{i+1} + y_i));
    origin: (N,) c0_i of −Σ c0_i log y_i, or None for the DBM (no origin, no mirror images).
    """

    gap: Array
    origin: Array | None = None

    def scale(self, theta):
        return Couplings(theta * self.gap, None if self.origin is None else theta * self.origin)


def _inv_weighted(cw, x):
    """(c/x, c/x²), zero where c == 0 (no barrier on that term)."""
    on = cw > 0
    ix = _safe_recip(x)
    return jnp.where(on, cw * ix, 0.0), jnp.where(on, cw * ix * ix, 0.0)


def _barrier_terms(y, cp: Couplings):
    """Gradient and Hessian of the barrier  −Σ c_i log g_i [− Σ c_i log p_i − Σ c0_i log y_i],
    g_i = y_{i+1} − y_i, p_i = y_{i+1} + y_i.

    The Hessian is tridiagonal, diag_i = q_i + w_{i−1} + w_i, off-diagonal −w_i (w ≥ 0, q ≥ 0):
    returns grad (N,), q (N,), w (N−1,).
    """
    zero = jnp.zeros(1, y.dtype)
    c = cp.gap
    g = jnp.diff(y)
    ig, w = _inv_weighted(c, g)  # c/g, c/g²
    grad = jnp.concatenate([ig, zero]) - jnp.concatenate([zero, ig])
    q = jnp.zeros_like(y)
    if cp.origin is None:
        return grad, q, w
    p = y[1:] + y[:-1]
    ip, ip2 = _inv_weighted(c, p)
    grad = grad - jnp.concatenate([ip, zero]) - jnp.concatenate([zero, ip])
    # off-diagonal −(c/g² − c/p²), written without cancellation: 4c y_i y_{i+1}/(g² p²) ≥ 0;
    # the diagonal then has the excess 2c/p² per bond
    w = jnp.where(c > 0, 4.0 * c * y[1:] * y[:-1] * jnp.square(_safe_recip(g) * _safe_recip(p)), 0.0)
    q = 2.0 * (jnp.concatenate([ip2, zero]) + jnp.concatenate([zero, ip2]))
    i0, i02 = _inv_weighted(cp.origin, y)
    return grad - i0, q + i02, w


def _shift(x, k: int, fill):
    """x shifted right by k (k < 0: left), padded with ``fill``."""
    pad = jnp.full((abs(k),), fill, x.dtype)
    return jnp.concatenate([pad, x[:-k]]) if k > 0 else jnp.concatenate([x[-k:], pad])


def _solve_mmatrix(s, w, r):
    """Solve A x = r, A tridiagonal with A_ii = s_i + w_{i−1} + w_i, A_{i,i±1} = −w, s > 0, w ≥ 0.

    Both solvers are written in the excess s_i = A_ii − |off-diagonals|, which stays positive
    under elimination (Schur complements of a diagonally dominant M-matrix): no cancellation
    even when w ≫ s, as for nearly coincident levels. On CPU the Thomas recursion (two scans,
    each step vectorised over the replicas: 6× faster than cyclic reduction at N = 64), from
    both ends at once from N = 32 on (scans of N/2 steps; a scan step's own cost dominates at
    these sizes, so the whole split step is 1.2× faster at N = 64); elsewhere parallel cyclic
    reduction (log₂N vectorised sweeps, no sequential loop over N, which suits GPUs).
    s, r: (N,), w: (N−1,).
    """
    if jax.default_backend() == "cpu":
        # below N = 32 the two-ended form's set-up outweighs the scan steps it saves
        return _thomas(s, w, r) if s.shape[0] < 32 else _thomas_two_ended(s, w, r)
    return _cyclic_reduction(s, w, r)


def _thomas(s, w, r):
    """`_solve_mmatrix` by elimination from the left, s'_i = s_i + w_{i−1}s'_{i−1}/(s'_{i−1} + w_{i−1})."""
    zero = jnp.zeros(1, s.dtype)

    def eliminate(prev, row):
        s_prev, r_prev = prev
        s_i, r_i, w_left = row
        f = w_left / (s_prev + w_left)
        out = (s_i + f * s_prev, r_i + f * r_prev)
        return out, out

    start = (jnp.ones((), s.dtype), jnp.zeros((), s.dtype))  # row −1: no coupling (w_left = 0)
    _, (s, r) = jax.lax.scan(eliminate, start, (s, r, jnp.concatenate([zero, w])))

    def substitute(x_next, row):
        s_i, r_i, w_right = row
        x = (r_i + w_right * x_next) / (s_i + w_right)
        return x, x

    _, x = jax.lax.scan(substitute, jnp.zeros((), s.dtype), (s, r, jnp.concatenate([w, zero])), reverse=True)
    return x


def _thomas_two_ended(s, w, r):
    """`_solve_mmatrix` by elimination from both ends: rows 0 … h−1 from the top,
    s'_i = s_i + w_{i−1}s'_{i−1}/(s'_{i−1} + w_{i−1}), and rows N−1 … h from the bottom alike,
    in one scan of h = N/2 steps; then the 2×2 system of rows h−1 and h, and the substitution
    outwards in a second scan. An odd N gets a decoupled last row (x = 0)."""
    n = s.shape[0]
    if n % 2:
        s, r = jnp.concatenate([s, jnp.ones(1, s.dtype)]), jnp.concatenate([r, jnp.zeros(1, r.dtype)])
        w = jnp.concatenate([w, jnp.zeros(1, w.dtype)])
        return _thomas_two_ended(s, w, r)[:n]
    h = n // 2
    zero = jnp.zeros(1, s.dtype)
    to_prev = jnp.concatenate([zero, w])  # row i's coupling to row i − 1
    to_next = jnp.concatenate([w, zero])  # … to row i + 1

    def eliminate(prev, row):
        s_top, r_top, s_bot, r_bot = prev
        s_i, r_i, w_i, s_j, r_j, w_j = row  # row i from the top, row j = N−1−i from the bottom
        f, g = w_i / (s_top + w_i), w_j / (s_bot + w_j)
        out = (s_i + f * s_top, r_i + f * r_top, s_j + g * s_bot, r_j + g * r_bot)
        return out, out

    one, nil = jnp.ones((), s.dtype), jnp.zeros((), s.dtype)  # row −1 (N): no coupling
    rows = (s[:h], r[:h], to_prev[:h], s[::-1][:h], r[::-1][:h], to_next[::-1][:h])
    (s_top, r_top, s_bot, r_bot), (st, rt, sb, rb) = jax.lax.scan(eliminate, (one, nil, one, nil), rows)
    # rows h−1 and h: (s_top + c) x_{h−1} − c x_h = r_top, (s_bot + c) x_h − c x_{h−1} = r_bot
    c = w[h - 1]
    det = s_top * s_bot + c * (s_top + s_bot)
    x_top = (r_top * (s_bot + c) + c * r_bot) / det
    x_bot = (r_bot * (s_top + c) + c * r_top) / det

    def substitute(x_prev, row):
        x_i, x_j = x_prev
        s_i, r_i, w_i, s_j, r_j, w_j = row
        out = ((r_i + w_i * x_i) / (s_i + w_i), (r_j + w_j * x_j) / (s_j + w_j))
        return out, out

    # rows h−2 … 0, each coupled to the row below it, and h+1 … N−1, each to the row above
    outwards = (st[:-1][::-1], rt[:-1][::-1], to_next[: h - 1][::-1], sb[:-1][::-1], rb[:-1][::-1], to_prev[h + 1 :])
    _, (x_up, x_down) = jax.lax.scan(substitute, (x_top, x_bot), outwards)
    return jnp.concatenate([x_up[::-1], x_top[None], x_bot[None], x_down])


def _cyclic_reduction(s, w, r):
    """`_solve_mmatrix` by parallel cyclic reduction."""
    n = s.shape[0]
    zero = jnp.zeros(1, s.dtype)
    wl = jnp.concatenate([zero, w])  # coupling of row i to row i − k
    wr = jnp.concatenate([w, zero])  # … to row i + k
    k = 1
    while k < n:
        d = s + wl + wr
        d_lo, d_hi = _shift(d, k, 1.0), _shift(d, -k, 1.0)
        a = wl / d_lo  # multiplier of row i − k
        b = wr / d_hi  # multiplier of row i + k
        s = s + a * _shift(s, k, 1.0) + b * _shift(s, -k, 1.0)
        r = r + a * _shift(r, k, 0.0) + b * _shift(r, -k, 0.0)
        wl, wr = a * _shift(wl, k, 0.0), b * _shift(wr, -k, 0.0)
        k *= 2
    return r / (s + wl + wr)


def _pair_gap(gb, c):
    """Gap of an isolated pair after the backward-Euler prox: g − 2c/g = g_b."""
    return 0.5 * (gb + jnp.sqrt(gb**2 + 8.0 * c))


def _prox_guess(b, cp: Couplings, sweeps: int = 6):
    """A strictly feasible start for the Newton iteration of `_prox`.

    Gaps first: each nearest pair split as if alone, then Jacobi sweeps of the gap equation
    g_i = g_b,i + 2c_i/g_i − c_{i−1}/g_{i−1} − c_{i+1}/g_{i+1} (each solved for its positive
    root). Line case: the prox preserves the mean, which fixes the positions. Chiral case:
    level 0 against the origin alone, the gaps stacked on it.
    """
    zero = jnp.zeros(1, b.dtype)
    c = cp.gap
    gb = jnp.diff(b)
    g = _pair_gap(gb, c)
    for _ in range(sweeps):
        # c_{i±1}/g_{i±1} computed at the shifted reads: a sweep is then one fused pass (g > 0
        # wherever c > 0)
        nxt = jnp.where(g[1:] > 0, c[1:] / g[1:], 0.0)
        prv = jnp.where(g[:-1] > 0, c[:-1] / g[:-1], 0.0)
        rhs = gb - jnp.concatenate([nxt, zero]) - jnp.concatenate([zero, prv])
        g = _pair_gap(rhs, c)
    # positions by a parallel prefix sum (log₂N shifted adds): XLA's cumsum on CPU (a
    # reduce-window) costs 3× as much at N = 64, a sequential scan transposes the batch
    pos = jnp.concatenate([zero, jax.lax.associative_scan(jnp.add, g)])
    if cp.origin is None:
        return pos - jnp.mean(pos) + jnp.mean(b)
    y0 = 0.5 * (b[0] + jnp.sqrt(b[0] ** 2 + 4.0 * cp.origin[0]))
    return pos + y0


def _prox(b, cp: Couplings, tol, max_iter: int):
    """argmin_y ½|y − b|² + barrier(y) (see `_barrier_terms`) by damped Newton steps.

    b: (N,) sorted (chiral: ≥ 0); max_iter ≥ 1 (the first iteration is always taken).
    Returns (y (N,) strictly ordered, iterations, converged).
    Convergence is judged on the full Newton step. The iteration stops unconverged when the
    fraction-to-boundary rule blocks the step (a gap below the float resolution of the
    positions, from a near-zero coupling squeezed by its neighbours: the whole chain would
    wait on it).
    """
    chiral = cp.origin is not None
    n = b.shape[0]
    span = (b[-1] if chiral else b[-1] - b[0]) / n
    # 1e-3 of the mean gap, and no less than what makes tol·floor 4 ulps of the positions:
    # finer changes cannot be represented, and asking for them would never converge
    ulp = jnp.max(jnp.abs(b)) * jnp.finfo(b.dtype).eps
    floor = jnp.maximum(1e-3 * span, 4.0 * ulp / tol) + jnp.finfo(b.dtype).tiny

    def newton(y):
        grad, q, w = _barrier_terms(y, cp)
        delta = -_solve_mmatrix(1.0 + q, w, grad + y - b)
        # fraction-to-boundary: keep every barred gap (and p_i, y_i) positive
        g, dgap = jnp.diff(y), jnp.diff(delta)
        lim = jnp.where((dgap < 0) & (cp.gap > 0), g / jnp.where(dgap < 0, -dgap, 1.0), jnp.inf)
        amax = jnp.min(lim, initial=jnp.inf)
        # convergence: gap changes relative to the gap, or to `floor` for gaps that small
        # (those sit at the float resolution of the positions and need no relative accuracy)
        rel = jnp.abs(dgap) / jnp.maximum(g, floor)
        if chiral:
            p, dp = y[1:] + y[:-1], delta[1:] + delta[:-1]
            limp = jnp.where((dp < 0) & (cp.gap > 0), p / jnp.where(dp < 0, -dp, 1.0), jnp.inf)
            lim0 = jnp.where((delta < 0) & (cp.origin > 0), y / jnp.where(delta < 0, -delta, 1.0), jnp.inf)
            amax = jnp.minimum(amax, jnp.minimum(jnp.min(limp, initial=jnp.inf), jnp.min(lim0, initial=jnp.inf)))
            rel = jnp.concatenate([rel, (jnp.abs(delta[0]) / jnp.maximum(y[0], floor))[None]])
        alpha = jnp.minimum(1.0, 0.95 * amax)
        return y + alpha * delta, jnp.max(rel, initial=0.0), alpha

    def cond(carry):
        _, it, err, alpha = carry
        return (it < max_iter) & (err > tol) & (alpha > 0.05)

    def body(carry):
        y, it, _, _ = carry
        y, err, alpha = newton(y)
        return y, it + 1, err, alpha

    one = jnp.asarray(1.0, b.dtype)
    carry = (_prox_guess(b, cp), jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, b.dtype), one)
    # the first iteration outside the loop (every replica takes it): a batch enters the loop
    # only when some replica needs a second, and skips the loop's per-iteration selects
    y, it, err, _ = jax.lax.while_loop(cond, body, body(carry))
    if chiral:
        y = jnp.abs(y)  # zero origin coupling: y_0 may sit at the reflecting origin
    # the last step was taken: an accepted full step of relative size ≤ tol has converged
    return y, it, err <= tol


def _ordered(y, chiral: bool):
    ok = jnp.all(jnp.diff(y) > 0)
    return ok & (y[0] >= 0) if chiral else ok


def _repel(b, cp: Couplings, fallback: Couplings, tol, max_iter: int, rho: float = 0.25):
    """One implicit-midpoint step of the nearest-neighbour repulsion: y = b + F((y + b)/2).

    With m = (y + b)/2 this is m = prox_{c/2}(b), y = 2m − b. For an isolated pair the gap
    becomes g² = g_b² + 4c (with c = Dτ·χ²_β the exact 2×2 law), and ⟨y, y⟩ − ⟨b, b⟩ =
    2⟨m, F(m)⟩ is the exact rate, so the singular part adds no O(τ²)F² error. A gap that the neighbours
    compress (the extrapolation would shrink it below rho × its midpoint value; ~0.2 % of the
    gaps per step at the recommended dt) is widened back to that symmetrically about its
    centre; if some gap still is not positive (clusters, degenerate starts) the whole step
    falls back to backward Euler, y = prox_c(b), which is always ordered. The fallback sits
    in a while_loop so that a batch without such cases never computes it.
    If the solver does not converge (see `_prox`) with the given couplings, the step is redone
    with ``fallback`` couplings (their means: a valid step of the same weak order that only
    lacks the exact 2×2 law for this step).
    Returns (y (N,), Newton iterations).
    """
    chiral = cp.origin is not None
    zero = jnp.zeros(1, b.dtype)

    def attempt(theta, cp):
        # θ-method: m = prox_{θc}(b), y = b + (m − b)/θ  (θ = ½ midpoint, θ = 1 backward Euler)
        m, it, converged = _prox(b, cp.scale(theta), tol, max_iter)
        y = b + (m - b) / theta
        fix = jnp.maximum(rho * jnp.diff(m) - jnp.diff(y), 0.0) * (theta < 1)
        y = y - 0.5 * jnp.concatenate([fix, zero]) + 0.5 * jnp.concatenate([zero, fix])
        if chiral:
            y = jnp.abs(y)  # zero origin coupling: the reflecting origin
        return y, it, converged

    def body(carry):
        _, stage, _, it = carry
        # stage 1: midpoint; 2: backward Euler (midpoint disordered); 3, 4: the same with the
        # fallback couplings (solver not converged)
        stage = stage + 1
        theta = jnp.where(stage % 2 == 1, 0.5, 1.0).astype(b.dtype)
        use = jax.tree_util.tree_map(lambda a, f: jnp.where(stage > 2, f, a), cp, fallback)
        y, it2, converged = attempt(theta, use)
        retry = (stage < 4) & ~converged
        stage = jnp.where(retry & (stage < 3), 2, stage)  # unconverged: go to the fallback couplings
        return y, stage, retry | ~_ordered(y, chiral), it + it2

    # one solver instance: the loop runs once, and again only for a batch in which some
    # replica needs a fallback (θ and the couplings come from the carry: nothing is hoisted)
    carry = (b, jnp.asarray(0, jnp.int32), jnp.asarray(True), jnp.asarray(0, jnp.int32))
    y, _, _, it = jax.lax.while_loop(lambda cr: cr[2] & (cr[1] < 4), body, carry)
    return y, it
