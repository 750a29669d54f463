"""Record reference trajectories of the whole optimizer family from the library each formula names.

Every fixture is 300 float64 steps (float32 for the ``*_f32`` ones) of one optimizer on the
least-squares problem of scripts/make_variant_fixtures.py (imported from there, not copied):
``0.5/n * ||A w - b||^2`` with gradient ``g = A.T @ (A @ w - b) / n`` computed in NumPy from the
current parameters, ``A`` with all-zero columns and columns scaled from 2**0 down to 2**-36, so
that eps dominates the denominator for some coordinates and not for others.
tests/test_family_parity.py replays the files with ``minnet.optim`` (no reference library needed).

Run by hand in a separate environment with the reference libraries (never in the project venv):

    python3 -m venv /work/refenv
    /work/refenv/bin/pip install torch==2.13.0 numpy "jax[cpu]" optax keras
    /work/refenv/bin/python scripts/make_family_fixtures.py   # writes tests/fixtures/family_*

PyTorch runs with ``torch.set_default_dtype(torch.float64)`` (NAdam keeps ``mu_product`` in the
default dtype; in float32 it drifts ~1e-7 from float64 over 300 steps) and ``foreach=False``.
Keras 3 runs on its JAX backend with ``jax_enable_x64`` and floatx float64; optax with x64.

Before a fixture is written, the library's trajectory is checked against a plain-NumPy
transcription of the formula below (the ``np_*`` functions, written with minnet's = PyTorch's
argument names and each ``eps_mode``) run with the fixture's ``minnet_kwargs``: relative gap
<= 1e-9 (float64) or 1e-4 (float32), else the script stops. For every non-default ``eps_mode``
it also checks that the default placement misses the library by more than 1e-2 at the last step.

Formulas (``t`` = step count from 1; moments start at 0 unless said; ``wd`` = weight_decay;
"L2" means ``g <- g + wd*w`` before everything else, "decoupled" means ``w <- w*(1 - lr*wd)``)

SGD [torch.optim.SGD; defaults lr=1e-3, momentum=0, dampening=0, wd=0, nesterov=False]
    d = -g if maximize else g;  d += wd*w (L2);
    momentum: buf = d at t=1, else buf = momentum*buf + (1-dampening)*d;
              d = d + momentum*buf if nesterov else buf
    w -= lr*d                                                                       (no eps)

Adam / AdamW [torch.optim.Adam(decoupled_weight_decay=...), torch.optim.AdamW (wd default 1e-2)]
    wd: L2, or decoupled if decoupled_weight_decay (AdamW always);
    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
    w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)        eps outside the root, after the
                                                                 bias correction of v

RMSprop [defaults lr=1e-2, alpha=0.99, eps=1e-8]; wd is L2
    v = alpha*v + (1-alpha)*g^2;  centered: a = alpha*a + (1-alpha)*g, var = v - a^2, else var = v
    "outside" (torch.optim.RMSprop):  D = sqrt(var) + eps
    "inside"  (Keras 3 RMSprop, rho=0.9 eps=1e-7 defaults; optax.rmsprop, eps_in_sqrt=True
               default, decay=0.9 eps=1e-8 defaults):  D = sqrt(var + eps)
    momentum > 0 (torch): buf = momentum*buf + g/D;  w -= lr*buf
    momentum = 0:         w -= lr*g/D
    Keras and optax keep lr INSIDE the momentum buffer: buf = momentum*buf + lr*g/D; w -= buf.
    Equal to torch's only at constant lr (lr*buf_torch == buf_keras); the optax momentum fixture
    uses a constant lr and says so; the Keras ones use momentum=0.

Adagrad [defaults lr=1e-2, lr_decay=0, wd=0, initial_accumulator_value=0, eps=1e-10]; wd is L2
    clr = lr / (1 + (t-1)*lr_decay);  S = S + g^2  (S starts at initial_accumulator_value)
    "outside"        (torch.optim.Adagrad):  w -= clr * g / (sqrt(S) + eps)
    "inside"         (Keras 3 Adagrad, initial 0.1 and eps 1e-7 defaults):
                                             w -= clr * g / sqrt(S + eps)
    "inside_guarded" (optax.adagrad, initial 0.1 and eps 1e-7 defaults):
                                             w -= clr * g * where(S > 0, 1/sqrt(S + eps), 0)
    The guard equals "inside" whenever eps > 0 or S > 0; it matters only at eps=0 on a coordinate
    whose accumulator is still 0 (an all-zero gradient column with initial 0): 0 instead of NaN.

Adadelta [torch.optim.Adadelta; defaults lr=1.0, rho=0.9, eps=1e-6]; wd is L2; eps in BOTH roots
    Eg2 = rho*Eg2 + (1-rho)*g^2;  delta = sqrt(Edx2 + eps) / sqrt(Eg2 + eps) * g
    Edx2 = rho*Edx2 + (1-rho)*delta^2;  w -= lr*delta
    Keras 3 Adadelta (lr=1e-3, rho=0.95, eps=1e-7 defaults) is the same formula (recorded).

Adamax [defaults lr=2e-3, betas=(0.9, 0.999), eps=1e-8]; wd is L2
    m = b1*m + (1-b1)*g
    "max"     (torch.optim.Adamax, optax.adamax): u = max(b2*u, |g| + eps);  w -= lr/(1-b1^t)*m/u
    "outside" (Keras 3 Adamax, eps 1e-7 default): u = max(b2*u, |g|);  w -= lr/(1-b1^t)*m/(u+eps)
    The two differ only while b2*u wins the max: then "max" carries eps*b2^k, "outside" eps.
    optax.adamaxw (decoupled_weight_decay=True, eps "max"; wd default 1e-4 there):
              w -= lr*(m/(1-b1^t)/u + wd*w)         (decoupled, added to the update)
    On this problem they differ by 1.6% (eps=1e-8) and 3.7% (eps=1e-2) at b2=0.999 already (the
    tiny and all-zero columns, where eps is the whole of u); small b2 (0.5, 0.9) with large eps
    gives a smaller gap (< 1e-2) and, at lr >= 1e-2, a chaotic trajectory, so it is not used.

NAdam [torch.optim.NAdam; defaults lr=2e-3, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3]
    wd: L2, or decoupled if decoupled_weight_decay
    mu_t = b1*(1 - 0.5*0.96^(t*momentum_decay));  mu_{t+1} likewise;  P_t = prod_{i<=t} mu_i
    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  D = sqrt(v/(1-b2^t)) + eps
    w -= lr*(1-mu_t)/(1-P_t) * g/D + lr*mu_{t+1}/(1-P_t*mu_{t+1}) * m/D
    optax.nadam / optax.nadamw (variant="optax"; = optax.adam(nesterov=True), no mu_t schedule):
    m_hat = b1*m/(1-b1^(t+1)) + (1-b1)*g/(1-b1^t);  w -= lr*(m_hat/(sqrt(v/(1-b2^t)) + eps)
    + wd*w)  (nadamw: decoupled_weight_decay=True, wd 1e-4 default there)

RAdam [torch.optim.RAdam; defaults lr=1e-3, betas=(0.9, 0.999), eps=1e-8]
    wd: L2, or decoupled if decoupled_weight_decay;  m, v as Adam;  m_hat = m/(1-b1^t)
    rho_inf = 2/(1-b2) - 1;  rho_t = rho_inf - 2*t*b2^t/(1-b2^t)
    rho_t > 5:  r = sqrt((rho_t-4)(rho_t-2)rho_inf / ((rho_inf-4)(rho_inf-2)rho_t))
                w -= lr * m_hat * r * sqrt(1-b2^t) / (sqrt(v) + eps)   (eps next to the RAW
                sqrt(v), unlike Adam's, which sits next to sqrt(v_hat))
    else:       w -= lr * m_hat                       (no eps)
    rho_t = 4.996 at t=5 and 5.994 at t=6 for b2=0.999 (4.96, 5.94 for b2=0.99): steps 1..5 are
    unrectified, step 6 is the first rectified one (a checkpoint).
    optax.radam (variant="optax"; threshold=5.0, eps_root=0): rectified where rho_t >= 5;
    w -= lr * r * m_hat / (sqrt(v/(1-b2^t)) + eps)   (eps after the bias correction, as Adam)

AdaBelief [optax.adabelief; defaults lr=1e-3, betas=(0.9, 0.999), eps=1e-16, eps_root=1e-16]
    m = b1*m + (1-b1)*g;  e = g - m   (this step's m, as in the paper)
    s = b2*s + (1-b2)*e^2 + eps_root   (eps_root STORED in s every step, so it is also
    multiplied by b2 and accumulates: s carries eps_root*(1-b2^t)/(1-b2), eps_root/(1-b2) in s_hat)
    w -= lr * (m/(1-b1^t)) / (sqrt(s/(1-b2^t)) + eps)

Lion [optax.lion (weight_decay 1e-3 default there), Keras 3 Lion; defaults lr=1e-4,
      betas=(0.9, 0.99), weight_decay=0]
    c = sign(b1*m + (1-b1)*g)   (sign(0) = 0: an all-zero column never moves)
    m = b2*m + (1-b2)*g;  w -= lr*(c + wd*w)   (decoupled, scaled by lr)          (no eps)

Rprop [torch.optim.Rprop, optax.rprop (variant="optax"); defaults lr=1e-2, etas=(0.5, 1.2),
       step_sizes=(1e-6, 50); state prev = 0, step_size = lr]                       (no eps)
    torch: s = sign(d*prev);  step_size = clamp(step_size*(eta_plus if s>0, eta_minus if s<0,
           1 if s=0), lo, hi);  d = 0 where s<0;  w -= sign(d)*step_size;  prev = d
    optax: s = g*prev;  step_size unchanged where s=0, else clip(step_size*(eta_plus if s>0
           else eta_minus), lo, hi);  w -= (0 where s<0 else prev);
           prev = 0 where s<0 else step_size*sign(g)      (prev is the previous UPDATE)

ASGD [torch.optim.ASGD; defaults lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, wd=0]; wd is L2
    eta, mu: the previous step's (lr and 1 at t=1)
    w = w*(1 - lambd*eta) - eta*d;  ax = ax + (w - ax)*mu if mu != 1 else w      (no eps)
    then eta = lr/(1 + lambd*lr*t)^alpha, mu = 1/max(1, t - t0)  (float64: default dtype)
    The fixtures also hold ax at the checkpoints (``state_ax``).

Yogi [optax.yogi; defaults b1=0.9, b2=0.999, eps=1e-3; m and v START AT 1e-6]
    m = (1-b1)*g + b1*m;  v = v - (1-b2)*sign(v - g^2)*g^2
    w -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)       eps outside the root, after the
                                                              bias correction of v

ADOPT [optax.contrib.adopt; defaults b1=0.9, b2=0.9999, eps=1e-6, nesterov=False,
       use_clipping=True]; c = t - 1 (optax's count before the step)
    x = g / max(sqrt(v), eps)          eps a FLOOR under the root of the previous v
    x = clip(x, -c^0.25, c^0.25)       (use_clipping; 0 at t=1)
    b1, b2 = (1, 0) at t=1, else (b1, b2):  v = (1-b2)*g^2 + b2*v;  m = (1-b1)*x + b1*m
    w -= lr*m   (nesterov: lr*((1-b1)*x + b1*m))            the first step moves nothing

Adan [optax.adan; defaults b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=1e-8, wd=0]
    diff = g - g_prev (0 at t=1);  m = (1-b1)*g + b1*m;  v = (1-b2)*diff + b2*v
    n = (1-b3)*(g + (1-b2)*diff)^2 + b3*n
    u = (m/(1-b1^t) + (1-b2)*v/(1-b2^t)) / (sqrt(n/(1-b3^t) + eps_root) + eps)
    w -= lr*(u + wd*w)                   eps_root inside the root, eps outside; wd scaled by lr

AdEMAMix [optax.contrib.ademamix; defaults b1=0.9, b2=0.999, b3=0.9999, alpha=5, eps=1e-8,
          eps_root=0, wd=0; b3 and alpha constant (optax's schedules of them not recorded)]
    m1 = (1-b1)*g + b1*m1;  m2 = (1-b3)*g + b3*m2;  nu = (1-b2)*g^2 + b2*nu
    w -= lr*((m1/(1-b1^t) + alpha*m2) / (sqrt(nu/(1-b2^t) + eps_root) + eps) + wd*w)
                                         m2 NOT bias-corrected; eps outside the root

Ftrl [Keras 3 keras.optimizers.Ftrl; defaults learning_rate=1e-3, learning_rate_power=-0.5,
      initial_accumulator_value=0.1, l1=l2=shrinkage=0, beta=0]; q = -learning_rate_power
    n starts at initial_accumulator_value, z at 0
    gs = g + 2*shrinkage*w;  n_new = n + g^2;  z = z + (gs - (n_new^q - n^q)/lr * w)
    quadratic = n_new^q/lr + 2*(l2 + beta/(2*lr));  w = (clip(z, -l1, l1) - z) / quadratic
    No eps argument: initial_accumulator_value is an eps INSIDE the root (n = init + sum g^2),
    beta one OUTSIDE it (w = -lr*z/(n^q + beta + 2*lr*l2)); minnet sweeps the former as eps.

SignSGD [optax.sign_sgd]                 w -= lr*sign(g)    (sign(0) = 0)             (no eps)
Signum [optax.signum; beta=0.9 default]  m = (1-beta)*g + beta*m (not debiased);
                                         w -= lr*sign(m)                              (no eps)
Lamb [keras.optimizers.Lamb (variant="keras": lr=1e-3, betas=(0.9, 0.999), eps=1e-7) and optax.lamb
      (variant="optax": eps=1e-6, eps_root=0, weight_decay=0)]; per TENSOR (a minnet Parameter,
      an optax leaf, a Keras variable): the fixtures split w into TENSORS shapes
    keras: m += (g - m)*(1-b1);  v += (g^2 - v)*(1-b2)
    optax: m = (1-b1)*g + b1*m;  v = (1-b2)*g^2 + b2*v
    u = (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)   (+ wd*w: optax's add_decayed_weights)
    ratio = ||w||/||u||, 1 where a norm is 0 (no eps in the ratio);  w -= lr*ratio*u

Lars [optax.lars; defaults weight_decay=0, trust_coefficient=1e-3, eps=0, momentum=0.9,
      nesterov=False]; per TENSOR as Lamb
    u = g + wd*w;  ratio = tc*||w||/(||u|| + eps), 1 where a norm is 0;  x = -lr*ratio*u
    trace = x + momentum*trace;  w += x + momentum*trace if nesterov else trace

OptimisticAdam [optax.optimistic_adam; defaults optimism=None (= lr), b1=0.9, b2=0.999,
                eps=1e-8, eps_root=0, nesterov=True]; o = optimism
    m = (1-b1)*g + b1*m;  v = (1-b2)*g^2 + b2*v
    m_hat = b1*m/(1-b1^(t+1)) + (1-b1)*g/(1-b1^t)   (nesterov; else m/(1-b1^t))
    r = m_hat / (sqrt(v/(1-b2^t) + eps_root) + eps)   eps outside the root, eps_root inside
    r_prev = r at t=1;  w -= (lr + o)*r - o*r_prev;  r_prev = r

NoisySGD [optax.noisy_sgd; defaults eta=0.01, gamma=0.55, key=0]                  (no eps)
    w -= lr*(g + sqrt(eta/t^gamma)*z),  z ~ N(0, 1) drawn by JAX (split the key every step);
    the fixture (tests/fixtures/noisy_sgd_optax.npz, not a family_* file) stores z of every
    step, recomputed here with optax's key splitting and checked against optax's trajectory.
ScheduleFreeAdamW [optax.contrib.schedule_free_adamw (variant="optax") and
      keras.optimizers.ScheduleFreeAdamW (variant="keras"); both: lr=0.0025, b1=0.9, b2=0.999,
      eps=1e-8, no warm-up, no weight decay; optax's weight_lr_power=2]
    z starts at w (the parameters hold y); v from 0; W = warmup_steps
    optax: v = (1-b2)*g^2 + b2*v;  u = g/(sqrt(v/(1-b2^t)) + eps) + wd*y
           sched(k) = (0 - lr)*(1 - min(k, W)/W) + lr in FLOAT32 (optax's linear_schedule
                      divides its int32 count; jitted, XLA makes it fma(-k, f32(1/W), 1) and
                      fma(f32(-lr), frac, f32(lr)): float32(lr) after the warm-up); lr without
           z' = z - sched(t-1)*u;  lr_max = max(lr_max, sched(t));  ws += lr_max^p
           c = lr_max^p/ws
    keras: y = y - y*wd*lr;  v = v + (g^2 - v)*(1-b2)
           z' = z - lr*min(t/W, 1)*g/(sqrt(v/(1-b2^t)) + eps);  c = 1/t
    both:  x = (1-c)*(y - (1-b1)*z)/b1 + c*z';  y = b1*x + (1-b1)*z';  z = z'
    eps OUTSIDE the root, after the bias correction (as Adam's). Equal without warm-up and wd.

Prodigy [optax.contrib.prodigy; defaults lr=1.0, betas=(0.9, 0.999), beta3=sqrt(b2), eps=1e-8,
         estim_lr0=1e-6, estim_lr_coef=1.0, weight_decay=0, safeguard_warmup=False]
    GLOBAL over every parameter (the fixtures split w into TENSORS leaves; one d for all):
    d starts at estim_lr0, N at 0, p0 = w at the start; dlr = d*lr*sqrt(1-b2^t)/(1-b1^t)
    dg = d*g;  m = b1*m + (1-b1)*dg;  v = b2*v + (1-b2)*dg*dg;  s = b3*s + dlr*dg/estim_lr0
    N = b3*N + (d/estim_lr0)*dlr*sum(g*(p0 - w));  d' = max(d, coef*N/sum(|s|))
    w += -wd*dlr*w - dlr*m/(sqrt(v) + d'*eps)      eps OUTSIDE the root, times the NEW d
Novograd [optax.novograd; defaults b1=0.9, b2=0.25, eps=1e-6, eps_root=0, weight_decay=0]; per
      TENSOR as Lamb, nu one scalar per tensor
    nu = ||g||^2 at t=1, else (1-b2)*||g||^2 + b2*nu
    x = g/(sqrt(nu + eps_root) + eps) + wd*w;  mu = x at t=1, else b1*mu + x;  w += (-lr)*mu

Fromage [optax.fromage; default min_norm=1e-6]; per TENSOR as Lamb; mult = 1/(1 + lr^2)^0.5
    wn = min_norm if ||w|| <= min_norm else ||w||;  gn likewise for ||g||   (a floor: safe_norm)
    ratio = 1 if wn == 0 or gn == 0 else wn/(gn + 0)
    w += (g*ratio)*(-(lr*mult)) + (mult - 1)*w

Zero-norm tensors: ``zero_grad_tensors`` (indices into TENSORS) get an all-zero gradient at every
step, ``zero_param_tensors`` start at w = 0 (config keys of the same names).

Schedules (torch.optim.lr_scheduler, ``scheduler.step()`` after every ``optimizer.step()``):
    StepLR:            lr_k = lr0 * gamma^floor(k/step_size)
    CosineAnnealingLR: PyTorch's recursive form of eta_min + (lr0-eta_min)(1+cos(pi*k/T_max))/2
    (k = number of scheduler steps taken before optimizer step k+1). The lr of every step is
    stored in the fixture as ``lrs``.

Trajectories must not be chaotic for a 1e-9 replay: RMSprop at alpha=0.9 or lr=1e-2, and
Adadelta at many (lr, rho, eps), take sign-like steps near the minimum on this problem and amplify
a 1e-13 change of w0 past 1e-3 within 300 steps. The script checks every fixture with the
transcription (w0 nudged by 1e-13, relative: the gap must stay below 1e-9) and the settings
below were chosen to pass it.

Keys of each ``family_<optimizer>_<placement>_<lib>_<detail>.npz``: ``config`` (JSON text:
name, optimizer (minnet.optim class name), minnet_kwargs, state_keys (optional: state arrays
also recorded, as ``state_<key>``), groups (optional: list of
{"slice": [start, stop], **kwargs overriding minnet_kwargs}, one minnet Parameter per slice),
scheduler (optional: {"name", "kwargs"}), tensors (optional: the shapes w is split into, one
minnet Parameter each), global_reduction (optional: with tensors, one optimizer state over all
of them, Prodigy's; the recorder reads recorded state arrays with the fixture's state_exprs,
e.g. optax's ``state.z``), grad_scale (the gradient fed to the optimizer is
grad_scale * g), library, library_version, reference (the call as text), note, dtype, steps,
checkpoints, problem (file name), problem_sha256), ``checkpoints`` (parameters after the steps in
config["checkpoints"], one row each), ``norms`` (``||w||_2`` after every step) and, with a
scheduler, ``lrs`` (the lr used at every step). The problem arrays (``a_int8``, ``a_col_exp``,
``b``, ``w0``, as in the variant fixtures) are stored once in ``tests/fixtures/lsq_problem.npz``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from make_variant_fixtures import gradient, make_problem, matrix  # noqa: E402

STEPS = 300
CHECKPOINTS = (1, 2, 5, 6, 20, 100, 300)  # RAdam: step 6 is the first rectified step
PROBLEM_FILE = "lsq_problem.npz"
N_PARAMS = 192
SPLIT = 80  # parameter groups: w[:80] and w[80:]
#: Per-tensor optimizers (Lamb, Lars, Novograd, Fromage): w split into parameters of these shapes.
TENSORS = [[8, 10], [40], [3, 4, 6]]


def problem_sha256(problem: dict[str, np.ndarray]) -> str:
    """Checksum of the problem arrays (the test recomputes it from lsq_problem.npz)."""
    h = hashlib.sha256()
    for key in ("a_int8", "a_col_exp", "b", "w0"):
        h.update(key.encode())
        h.update(np.ascontiguousarray(problem[key]).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# NumPy transcriptions of each formula (the docstring's table), in minnet's = PyTorch's names.
# Each step function takes (state dict, w, g, lr, **kwargs) and returns the new w.
# ---------------------------------------------------------------------------------------------


def _count(s: dict) -> int:
    s["t"] = s.get("t", 0) + 1
    return s["t"]


def _zeros(s: dict, key: str, w: np.ndarray, value: float = 0.0) -> np.ndarray:
    if key not in s:
        s[key] = np.full_like(w, value)
    return s[key]


def np_sgd(s, w, g, lr, *, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
           maximize=False):  # fmt: skip
    """NumPy transcription of torch.optim.SGD (single-tensor path)."""
    d = -g if maximize else g
    if weight_decay:
        d = d + weight_decay * w
    if momentum:
        if "buf" not in s:
            s["buf"] = d.copy()
        else:
            s["buf"] = momentum * s["buf"] + (1 - dampening) * d
        d = d + momentum * s["buf"] if nesterov else s["buf"]
    return w - lr * d


def np_adam(s, w, g, lr, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
            decoupled_weight_decay=False, eps_mode="outside", decoupled=None):  # fmt: skip
    """NumPy transcription of torch.optim.Adam / AdamW (no amsgrad)."""
    assert not amsgrad and eps_mode == "outside"
    b1, b2 = betas
    t = _count(s)
    if decoupled is None:
        decoupled = decoupled_weight_decay
    if weight_decay:
        if decoupled:
            w = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
    m = s["m"] = b1 * _zeros(s, "m", w) + (1 - b1) * g
    v = s["v"] = b2 * _zeros(s, "v", w) + (1 - b2) * g * g
    return w - lr / (1 - b1**t) * m / (np.sqrt(v) / math.sqrt(1 - b2**t) + eps)


def np_adamw(s, w, g, lr, *, weight_decay=1e-2, **kw):
    """NumPy transcription of torch.optim.AdamW (Adam with decoupled weight decay)."""
    return np_adam(s, w, g, lr, weight_decay=weight_decay, decoupled=True, **kw)


def np_rmsprop(s, w, g, lr, *, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
               centered=False, eps_mode="outside", lr_in_buffer=False):  # fmt: skip
    """NumPy transcription of RMSprop: torch ("outside"), Keras 3 / optax ("inside").

    ``lr_in_buffer`` is Keras's and optax's momentum (buf = momentum*buf + lr*g/D, w -= buf);
    it is here only to show that it equals torch's at constant lr.
    """
    if weight_decay:
        g = g + weight_decay * w
    v = s["v"] = alpha * _zeros(s, "v", w) + (1 - alpha) * g * g
    if centered:
        a = s["a"] = alpha * _zeros(s, "a", w) + (1 - alpha) * g
        var = v - a * a
    else:
        var = v
    if eps_mode == "outside":
        denom = np.sqrt(var) + eps
    elif eps_mode == "inside":
        denom = np.sqrt(var + eps)
    else:
        raise ValueError(eps_mode)
    if momentum > 0:
        if lr_in_buffer:
            buf = s["buf"] = momentum * _zeros(s, "buf", w) + lr * g / denom
            return w - buf
        buf = s["buf"] = momentum * _zeros(s, "buf", w) + g / denom
        return w - lr * buf
    return w - lr * g / denom


def np_adagrad(s, w, g, lr, *, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
               eps=1e-10, eps_mode="outside"):  # fmt: skip
    """NumPy transcription of Adagrad: torch ("outside"), Keras 3 ("inside"), optax (guarded)."""
    t = _count(s)
    if weight_decay:
        g = g + weight_decay * w
    clr = lr / (1 + (t - 1) * lr_decay)
    acc = s["acc"] = _zeros(s, "acc", w, initial_accumulator_value) + g * g
    with np.errstate(divide="ignore", invalid="ignore"):
        if eps_mode == "outside":
            return w - clr * g / (np.sqrt(acc) + eps)
        if eps_mode == "inside":
            return w - clr * g / np.sqrt(acc + eps)
        if eps_mode == "inside_guarded":
            scale = np.where(acc > 0, 1 / np.sqrt(acc + eps), 0.0)
            return w - clr * g * scale
    raise ValueError(eps_mode)


def np_adadelta(s, w, g, lr, *, rho=0.9, eps=1e-6, weight_decay=0.0):
    """NumPy transcription of torch.optim.Adadelta (and Keras 3 Adadelta)."""
    if weight_decay:
        g = g + weight_decay * w
    eg2 = s["eg2"] = rho * _zeros(s, "eg2", w) + (1 - rho) * g * g
    delta = np.sqrt(_zeros(s, "edx2", w) + eps) / np.sqrt(eg2 + eps) * g
    s["edx2"] = rho * s["edx2"] + (1 - rho) * delta * delta
    return w - lr * delta


def np_adamax(s, w, g, lr, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, eps_mode="max",
              decoupled_weight_decay=False):  # fmt: skip
    """NumPy transcription of Adamax: torch / optax ("max"), Keras 3 ("outside"); optax's
    adamaxw (decoupled_weight_decay)."""
    b1, b2 = betas
    t = _count(s)
    if weight_decay and not decoupled_weight_decay:
        g = g + weight_decay * w
    m = s["m"] = b1 * _zeros(s, "m", w) + (1 - b1) * g
    if decoupled_weight_decay:  # optax.adamaxw
        u = s["u"] = np.maximum(b2 * _zeros(s, "u", w), np.abs(g) + eps)
        return w - lr * (m / (1 - b1**t) / u + weight_decay * w)
    if eps_mode == "max":
        u = s["u"] = np.maximum(b2 * _zeros(s, "u", w), np.abs(g) + eps)
        return w - lr / (1 - b1**t) * m / u
    if eps_mode == "outside":
        u = s["u"] = np.maximum(b2 * _zeros(s, "u", w), np.abs(g))
        return w - lr / (1 - b1**t) * m / (u + eps)
    raise ValueError(eps_mode)


def np_nadam(s, w, g, lr, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             momentum_decay=4e-3, decoupled_weight_decay=False, variant="torch"):  # fmt: skip
    """NumPy transcription of torch.optim.NAdam; optax.nadam / nadamw (variant="optax")."""
    b1, b2 = betas
    t = _count(s)
    if variant == "optax":
        if weight_decay and not decoupled_weight_decay:
            g = g + weight_decay * w
        m = s["m"] = (1 - b1) * g + b1 * _zeros(s, "m", w)
        v = s["v"] = (1 - b2) * g * g + b2 * _zeros(s, "v", w)
        m_hat = b1 * (m / (1 - b1 ** (t + 1))) + (1 - b1) * (g / (1 - b1**t))
        u = m_hat / (np.sqrt(v / (1 - b2**t)) + eps)
        if decoupled_weight_decay:
            u = u + weight_decay * w
        return w - lr * u
    if weight_decay:
        if decoupled_weight_decay:
            w = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    s["mu_product"] = s.get("mu_product", 1.0) * mu
    m = s["m"] = b1 * _zeros(s, "m", w) + (1 - b1) * g
    v = s["v"] = b2 * _zeros(s, "v", w) + (1 - b2) * g * g
    denom = np.sqrt(v / (1 - b2**t)) + eps
    w = w - lr * (1 - mu) / (1 - s["mu_product"]) * g / denom
    return w - lr * mu_next / (1 - s["mu_product"] * mu_next) * m / denom


def radam_rho(t: int, beta2: float) -> tuple[float, float]:
    """(rho_inf, rho_t) of RAdam at step t."""
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf, rho_inf - 2 * t * beta2**t / (1 - beta2**t)


def np_radam(s, w, g, lr, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             decoupled_weight_decay=False, variant="torch"):  # fmt: skip
    """NumPy transcription of torch.optim.RAdam; optax.radam (variant="optax")."""
    b1, b2 = betas
    t = _count(s)
    if variant == "optax":
        m = s["m"] = (1 - b1) * g + b1 * _zeros(s, "m", w)
        v = s["v"] = (1 - b2) * g * g + b2 * _zeros(s, "v", w)
        m_hat = m / (1 - b1**t)
        rho_inf, rho_t = radam_rho(t, b2)
        if rho_t >= 5.0:
            r = math.sqrt(
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            )
            return w - lr * (r * m_hat / (np.sqrt(v / (1 - b2**t)) + eps))
        return w - lr * m_hat
    if weight_decay:
        if decoupled_weight_decay:
            w = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
    m = s["m"] = b1 * _zeros(s, "m", w) + (1 - b1) * g
    v = s["v"] = b2 * _zeros(s, "v", w) + (1 - b2) * g * g
    m_hat = m / (1 - b1**t)
    rho_inf, rho_t = radam_rho(t, b2)
    if rho_t > 5:
        r = math.sqrt(
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        )
        return w - lr * m_hat * r * math.sqrt(1 - b2**t) / (np.sqrt(v) + eps)
    return w - lr * m_hat


def np_adabelief(s, w, g, lr, *, betas=(0.9, 0.999), eps=1e-16, eps_root=1e-16):
    """NumPy transcription of optax.adabelief (scale_by_belief)."""
    b1, b2 = betas
    t = _count(s)
    m = s["m"] = b1 * _zeros(s, "m", w) + (1 - b1) * g
    e = g - m
    sv = s["s"] = b2 * _zeros(s, "s", w) + (1 - b2) * e * e + eps_root
    return w - lr * (m / (1 - b1**t)) / (np.sqrt(sv / (1 - b2**t)) + eps)


def np_lion(s, w, g, lr, *, betas=(0.9, 0.99), weight_decay=0.0):
    """NumPy transcription of optax.lion / Keras 3 Lion."""
    b1, b2 = betas
    c = np.sign(b1 * _zeros(s, "m", w) + (1 - b1) * g)
    s["m"] = b2 * s["m"] + (1 - b2) * g
    return w - lr * (c + weight_decay * w)


def np_rprop(s, w, g, lr, *, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False,
             variant="torch"):
    """NumPy transcription of torch.optim.Rprop (_single_tensor_rprop) / optax.rprop."""
    eta_minus, eta_plus = etas
    lo, hi = step_sizes
    prev = _zeros(s, "prev", w)
    step = _zeros(s, "step_size", w, lr)
    d = -g if maximize else g
    if variant == "optax":
        prod = d * prev
        new_step = np.where(prod == 0, step,
                            np.clip(step * np.where(prod > 0, eta_plus, eta_minus), lo, hi))
        s["step_size"] = new_step
        s["prev"] = np.where(prod < 0, 0.0, new_step * np.sign(d))
        return w - np.where(prod < 0, 0.0, prev)
    sign = np.sign(d * prev)
    factor = np.where(sign > 0, eta_plus, np.where(sign < 0, eta_minus, 1.0))
    s["step_size"] = np.clip(step * factor, lo, hi)
    d = np.where(sign < 0, 0.0, d)
    s["prev"] = d
    return w - np.sign(d) * s["step_size"]


def np_asgd(s, w, g, lr, *, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False):
    """NumPy transcription of torch.optim.ASGD (_single_tensor_asgd); eta, mu in float64."""
    t = _count(s)
    eta, mu = s.get("eta", lr), s.get("mu", 1.0)
    d = -g if maximize else g
    if weight_decay:
        d = d + weight_decay * w
    w = w * (1 - lambd * eta) - eta * d
    ax = _zeros(s, "ax", w)
    s["ax"] = ax + (w - ax) * mu if mu != 1 else w.copy()
    s["eta"] = lr / ((1 + lambd * lr * t) ** alpha)
    s["mu"] = 1 / max(1, t - t0)
    return w


def np_yogi(s, w, g, lr, *, betas=(0.9, 0.999), eps=1e-3, initial_accumulator_value=1e-6):
    """NumPy transcription of optax.yogi (scale_by_yogi, eps_root=0)."""
    b1, b2 = betas
    t = _count(s)
    m = s["m"] = (1 - b1) * g + b1 * _zeros(s, "m", w, initial_accumulator_value)
    v = _zeros(s, "v", w, initial_accumulator_value)
    v = s["v"] = v - (1 - b2) * np.sign(v - g * g) * g * g
    return w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)


def np_adopt(s, w, g, lr, *, betas=(0.9, 0.9999), eps=1e-6, nesterov=False, use_clipping=True):
    """NumPy transcription of optax.contrib.adopt (scale_by_adopt)."""
    c = _count(s) - 1  # optax's count before this step
    b1, b2 = betas if c > 0 else (1.0, 0.0)
    v = _zeros(s, "v", w)
    x = g / np.maximum(np.sqrt(v), eps)
    if use_clipping:
        x = np.clip(x, -(c**0.25), c**0.25)
    s["v"] = (1 - b2) * g * g + b2 * v
    m = s["m"] = (1 - b1) * x + b1 * _zeros(s, "m", w)
    u = (1 - b1) * x + b1 * m if nesterov else m
    return w - lr * u


def np_adan(s, w, g, lr, *, betas=(0.98, 0.92, 0.99), eps=1e-8, eps_root=1e-8,
            weight_decay=0.0):  # fmt: skip
    """NumPy transcription of optax.adan (scale_by_adan + add_decayed_weights)."""
    b1, b2, b3 = betas
    t = _count(s)
    diff = g - s["g"] if t > 1 else np.zeros_like(g)
    s["g"] = g.copy()
    m = s["m"] = (1 - b1) * g + b1 * _zeros(s, "m", w)
    v = s["v"] = (1 - b2) * diff + b2 * _zeros(s, "v", w)
    sq = g + (1 - b2) * diff
    n = s["n"] = (1 - b3) * sq * sq + b3 * _zeros(s, "n", w)
    u = (m / (1 - b1**t) + (1 - b2) * (v / (1 - b2**t)))
    u = u / (np.sqrt(n / (1 - b3**t) + eps_root) + eps)
    return w - lr * (u + weight_decay * w)


def np_ademamix(s, w, g, lr, *, betas=(0.9, 0.999, 0.9999), alpha=5.0, eps=1e-8,
                eps_root=0.0, weight_decay=0.0):  # fmt: skip
    """NumPy transcription of optax.contrib.ademamix (scale_by_ademamix + add_decayed_weights)."""
    b1, b2, b3 = betas
    t = _count(s)
    m1 = s["m1"] = (1 - b1) * g + b1 * _zeros(s, "m1", w)
    m2 = s["m2"] = (1 - b3) * g + b3 * _zeros(s, "m2", w)
    nu = s["nu"] = (1 - b2) * g * g + b2 * _zeros(s, "nu", w)
    u = (m1 / (1 - b1**t) + alpha * m2) / (np.sqrt(nu / (1 - b2**t) + eps_root) + eps)
    return w - lr * (u + weight_decay * w)


def np_ftrl(s, w, g, lr, *, learning_rate_power=-0.5, initial_accumulator_value=0.1,
            l1_regularization_strength=0.0, l2_regularization_strength=0.0,
            l2_shrinkage_regularization_strength=0.0, beta=0.0):  # fmt: skip
    """NumPy transcription of Keras 3's Ftrl (update_step)."""
    q = -learning_rate_power
    n = _zeros(s, "n", w, initial_accumulator_value)
    z = _zeros(s, "z", w)
    gs = g + 2 * l2_shrinkage_regularization_strength * w
    n_new = n + g * g
    z = s["z"] = z + (gs - (n_new**q - n**q) / lr * w)
    quadratic = n_new**q / lr + 2 * (l2_regularization_strength + beta / (2.0 * lr))
    l1 = l1_regularization_strength
    s["n"] = n_new
    return (np.clip(z, -l1, l1) - z) / quadratic


def np_signsgd(s, w, g, lr):
    """NumPy transcription of optax.sign_sgd."""
    return w + np.sign(g) * -lr


def np_signum(s, w, g, lr, *, beta=0.9):
    """NumPy transcription of optax.signum (ema without debiasing, sign, -lr)."""
    m = s["m"] = (1 - beta) * g + beta * _zeros(s, "m", w)
    return w + np.sign(m) * -lr
def np_lamb(s, w, g, lr, *, betas=(0.9, 0.999), eps=1e-7, weight_decay=0.0, variant="keras"):
    """NumPy transcription of keras.optimizers.Lamb / optax.lamb, ``w`` one tensor."""
    b1, b2 = betas
    t = _count(s)
    m, v = _zeros(s, "m", w), _zeros(s, "v", w)
    if variant == "keras":
        m = s["m"] = m + (g - m) * (1 - b1)
        v = s["v"] = v + (g * g - v) * (1 - b2)
    else:
        m = s["m"] = (1 - b1) * g + b1 * m
        v = s["v"] = (1 - b2) * g * g + b2 * v
    u = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps) + weight_decay * w
    w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(u)
    ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
    return w - lr * ratio * u


def np_lars(s, w, g, lr, *, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0, momentum=0.9,
            nesterov=False, trust_ratio=True):  # fmt: skip
    """NumPy transcription of optax.lars, ``w`` one tensor."""
    u = g + weight_decay * w
    w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(u)
    ratio = 1.0
    if trust_ratio and w_norm > 0 and u_norm > 0:
        ratio = trust_coefficient * w_norm / (u_norm + eps)
    x = -lr * ratio * u
    trace = s["trace"] = x + momentum * _zeros(s, "trace", w)
    return w + (x + momentum * trace if nesterov else trace)


def np_optimistic_adam(s, w, g, lr, *, optimism=None, betas=(0.9, 0.999), eps=1e-8,
                       eps_root=0.0, nesterov=True):  # fmt: skip
    """NumPy transcription of optax.optimistic_adam (scale_by_adam(nesterov) +
    scale_by_optimistic_gradient(lr, optimism) + scale_by_learning_rate(1.0))."""
    b1, b2 = betas
    t = _count(s)
    o = lr if optimism is None else optimism
    m = s["m"] = (1 - b1) * g + b1 * _zeros(s, "m", w)
    v = s["v"] = (1 - b2) * g * g + b2 * _zeros(s, "v", w)
    if nesterov:
        m_hat = b1 * (m / (1 - b1 ** (t + 1))) + (1 - b1) * (g / (1 - b1**t))
    else:
        m_hat = m / (1 - b1**t)
    r = m_hat / (np.sqrt(v / (1 - b2**t) + eps_root) + eps)
    prev = r if t == 1 else s["r"]
    s["r"] = r
    return w - ((lr + o) * r - o * prev)
def np_schedulefreeadamw(s, w, g, lr, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                         warmup_steps=0, weight_lr_power=2.0, variant="optax"):  # fmt: skip
    """NumPy transcription of optax.contrib.schedule_free_adamw / keras ScheduleFreeAdamW."""
    b1, b2 = betas
    t = _count(s)
    if "z" not in s:
        s["z"] = w.copy()
    z, v = s["z"], _zeros(s, "v", w)
    wd, big_w = weight_decay, warmup_steps

    def sched(k: float) -> float:  # optax's linear_schedule in float32, as XLA fuses it
        f32, f64 = np.float32, np.float64
        if big_w == 0:
            return lr
        frac = f32(-f64(min(max(k, 0), big_w)) * f64(f32(1 / big_w)) + 1)  # fma, once rounded
        return float(f32(f64(f32(-lr)) * f64(frac) + f64(f32(lr))))

    y = w
    if variant == "keras":
        y = w - w * wd * lr
        v = s["v"] = v + (g * g - v) * (1 - b2)
        lr_z = lr * min(t / big_w, 1.0) if big_w else lr
        z_new = z - (lr_z * g) / (np.sqrt(v / (1 - b2**t)) + eps)
        c = 1.0 / t
    else:
        v = s["v"] = (1 - b2) * g * g + b2 * v
        u = g / (np.sqrt(v / (1 - b2**t)) + eps) + wd * y
        z_new = z - sched(t - 1) * u
        s["lr_max"] = max(s.get("lr_max", 0.0), sched(t))
        s["ws"] = s.get("ws", 0.0) + s["lr_max"] ** weight_lr_power
        c = s["lr_max"] ** weight_lr_power / s["ws"]
    x = (1 - c) * (y - (1 - b1) * z) / b1 + c * z_new
    s["z"] = z_new
    return b1 * x + (1 - b1) * z_new


def np_prodigy(s, w, g, lr, *, betas=(0.9, 0.999), beta3=None, eps=1e-8, estim_lr0=1e-6,
               estim_lr_coef=1.0, weight_decay=0.0, safeguard_warmup=False):  # fmt: skip
    """NumPy transcription of optax.contrib.prodigy, ``w`` the whole model (one global d)."""
    b1, b2 = betas
    b3 = b2**0.5 if beta3 is None else beta3
    t = _count(s)
    if "p0" not in s:
        s["p0"], s["d"], s["n"] = w.copy(), estim_lr0, 0.0
    m, v, sk, d = _zeros(s, "m", w), _zeros(s, "v", w), _zeros(s, "s", w), s["d"]
    dlr = d * lr * ((1 - b2**t) ** 0.5) / (1 - b1**t)
    dg = d * g
    m = s["m"] = b1 * m + (1 - b1) * dg
    v = s["v"] = b2 * v + (1 - b2) * dg * dg
    sk = s["s"] = b3 * sk + (d if safeguard_warmup else dlr) * dg / estim_lr0
    s["n"] = b3 * s["n"] + (d / estim_lr0) * dlr * np.dot(g, s["p0"] - w)
    d_new = s["d"] = max(d, estim_lr_coef * s["n"] / np.abs(sk).sum())
    return w + (-weight_decay * dlr * w - dlr * m / (np.sqrt(v) + d_new * eps))
def np_novograd(s, w, g, lr, *, betas=(0.9, 0.25), eps=1e-6, eps_root=0.0, weight_decay=0.0):
    """NumPy transcription of optax.novograd, ``w`` one tensor (nu a scalar)."""
    b1, b2 = betas
    t = _count(s)
    n = np.linalg.norm(g) ** 2
    nu = s["nu"] = n if t == 1 else (1 - b2) * n + b2 * s["nu"]
    x = g / (np.sqrt(nu + eps_root) + eps) + weight_decay * w
    mu = s["mu"] = x if t == 1 else b1 * s["mu"] + x
    return w + -lr * mu


def np_fromage(s, w, g, lr, *, min_norm=1e-6):
    """NumPy transcription of optax.fromage, ``w`` one tensor."""
    mult = 1 / (1 + lr**2) ** 0.5
    wn, gn = np.linalg.norm(w), np.linalg.norm(g)
    wn = min_norm if wn <= min_norm else wn
    gn = min_norm if gn <= min_norm else gn
    ratio = 1.0 if wn == 0 or gn == 0 else wn / (gn + 0.0)
    return w + ((g * ratio) * -(lr * mult) + (mult - 1) * w)


def start_w(fx: dict, problem: dict[str, np.ndarray]) -> np.ndarray:
    """The fixture's starting parameters: w0, with the ``zero_param_tensors`` set to 0."""
    w = problem["w0"].copy()
    for i in fx.get("zero_param_tensors", ()):
        lo, hi = tensor_slices(fx)[i]
        w[lo:hi] = 0.0
    return w


def fixture_grad(fx: dict, g: np.ndarray) -> np.ndarray:
    """The gradient the optimizer sees: grad_scale * g, the ``zero_grad_tensors`` set to 0."""
    g = fx.get("grad_scale", 1.0) * g
    for i in fx.get("zero_grad_tensors", ()):
        lo, hi = tensor_slices(fx)[i]
        g[lo:hi] = 0.0
    return g


def tensor_slices(fx: dict) -> list[list[int]] | None:
    """The flat ranges of the fixture's tensors (``fx["tensors"]`` shapes), or None."""
    if not fx.get("tensors"):
        return None
    out, lo = [], 0
    for shape in fx["tensors"]:
        out.append([lo, lo + math.prod(shape)])
        lo += math.prod(shape)
    assert lo == N_PARAMS
    return out


TRANSCRIPTIONS: dict[str, Callable] = {
    "SGD": np_sgd, "Adam": np_adam, "AdamW": np_adamw, "RMSprop": np_rmsprop,
    "Adagrad": np_adagrad, "Adadelta": np_adadelta, "Adamax": np_adamax, "NAdam": np_nadam,
    "RAdam": np_radam, "AdaBelief": np_adabelief, "Lion": np_lion, "Rprop": np_rprop,
    "ASGD": np_asgd, "Yogi": np_yogi, "ADOPT": np_adopt, "Adan": np_adan,
    "AdEMAMix": np_ademamix, "Ftrl": np_ftrl, "SignSGD": np_signsgd, "Signum": np_signum,
    "Lamb": np_lamb, "Lars": np_lars, "OptimisticAdam": np_optimistic_adam,
    "ScheduleFreeAdamW": np_schedulefreeadamw, "Prodigy": np_prodigy, "Novograd": np_novograd,
    "Fromage": np_fromage,
}  # fmt: skip
DEFAULT_EPS_MODE = {
    "Adam": "outside", "AdamW": "outside", "RMSprop": "outside", "Adagrad": "outside",
    "Adamax": "max",
}  # fmt: skip


def torch_lrs(scheduler: dict | None, lr0: float) -> list[float]:
    """The lr of every step under a torch scheduler (recorded from torch itself)."""
    if scheduler is None:
        return [lr0] * STEPS
    import torch

    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr0)
    sched = getattr(torch.optim.lr_scheduler, scheduler["name"])(opt, **scheduler["kwargs"])
    out = []
    for _ in range(STEPS):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        sched.step()
    return out


def transcribe(fx: dict, problem: dict[str, np.ndarray], kwargs: dict, lrs: list[float],
               extra: dict | None = None, capture: dict | None = None) -> np.ndarray:  # fmt: skip
    """Run the NumPy transcription of fx's optimizer with ``kwargs``; parameters after each step
    (and, for each key of ``capture``, that state array after each step appended to its list)."""
    dtype = np.dtype(fx["dtype"])
    a, b = matrix(problem), problem["b"]
    w = start_w(fx, problem).astype(dtype)
    fn = TRANSCRIPTIONS[fx["optimizer"]]
    groups = fx.get("groups") or [{"slice": [0, N_PARAMS]}]
    if fx.get("tensors") and not fx.get("global_reduction"):  # one state (and norm) per tensor
        groups = [{"slice": sl} for sl in tensor_slices(fx)]
    states: list[dict] = [{} for _ in groups]
    out = np.empty((STEPS, N_PARAMS), dtype)
    for k in range(STEPS):
        g = fixture_grad(fx, gradient(a, b, w.astype(np.float64))).astype(dtype)
        new = w.copy()
        for grp, st in zip(groups, states, strict=True):
            lo, hi = grp["slice"]
            kw = {**kwargs, **{key: v for key, v in grp.items() if key != "slice"}, **(extra or {})}
            lr = kw.pop("lr")
            lr = lrs[k] * lr / kwargs["lr"] if fx.get("scheduler") else lr
            new[lo:hi] = fn(st, w[lo:hi], g[lo:hi], lr, **kw)
        w = new
        out[k] = w
        for key, rows in (capture or {}).items():
            rows.append(np.concatenate([st[key] for st in states]))
    return out


# ---------------------------------------------------------------------------------------------
# Library recorders. Each returns the parameters after every step, shape (STEPS, N_PARAMS).
# ---------------------------------------------------------------------------------------------


def record_torch(fx: dict, problem: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    torch.set_default_dtype(torch.float64)
    dtype = getattr(torch, fx["dtype"])
    a, b = matrix(problem), problem["b"]
    groups = fx.get("groups") or [{"slice": [0, N_PARAMS]}]
    tensors = [
        torch.tensor(problem["w0"][g["slice"][0] : g["slice"][1]], dtype=dtype, requires_grad=True)
        for g in groups
    ]
    kw = dict(fx["torch_kwargs"])
    if fx.get("groups"):
        params = [
            {"params": [p], **{k: v for k, v in g.items() if k != "slice"}}
            for p, g in zip(tensors, groups, strict=True)
        ]
    else:
        params = tensors
    opt = getattr(torch.optim, fx["torch_class"])(params, foreach=False, **kw)
    sched = None
    if fx.get("scheduler"):
        s = fx["scheduler"]
        sched = getattr(torch.optim.lr_scheduler, s["name"])(opt, **s["kwargs"])
    out = []
    for _ in range(STEPS):
        w = torch.cat([p.detach() for p in tensors]).numpy().astype(np.float64)
        g = fx.get("grad_scale", 1.0) * gradient(a, b, w)
        for p, grp in zip(tensors, groups, strict=True):
            lo, hi = grp["slice"]
            p.grad = torch.from_numpy(g[lo:hi].copy()).to(dtype)
        opt.step()
        if sched is not None:
            sched.step()
        out.append(torch.cat([p.detach() for p in tensors]).numpy().copy())
        for key in fx.get("state_keys", ()):
            rows = fx.setdefault("recorded_states", {}).setdefault(key, [])
            rows.append(torch.cat([opt.state[p][key].detach() for p in tensors]).numpy().copy())
    return np.array(out)


def _jax64():
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax


def record_optax(fx: dict, problem: dict[str, np.ndarray]) -> np.ndarray:
    jax = _jax64()
    import jax.numpy as jnp
    import optax

    a, b = matrix(problem), problem["b"]
    tx = eval(fx["reference"], {"optax": optax})  # the reference text is the call itself
    params = jnp.asarray(problem["w0"], dtype=jnp.float64)
    slices = tensor_slices(fx)
    if slices is not None:  # a list of leaves of the fixture's shapes
        w0 = start_w(fx, problem)
        params = [jnp.asarray(w0[lo:hi].reshape(shape), dtype=jnp.float64)
                  for (lo, hi), shape in zip(slices, fx["tensors"], strict=True)]  # fmt: skip
    state = tx.init(params)

    @jax.jit
    def apply(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def flat(ps):
        return np.asarray(ps) if slices is None else np.concatenate([np.ravel(p) for p in ps])

    out = []
    for _ in range(STEPS):
        g = fixture_grad(fx, gradient(a, b, flat(params)))
        if slices is None:
            g = jnp.asarray(g)
        else:
            g = [jnp.asarray(g[lo:hi].reshape(shape))
                 for (lo, hi), shape in zip(slices, fx["tensors"], strict=True)]  # fmt: skip
        params, state = apply(g, state, params)
        out.append(flat(params).copy())
        assert out[-1].dtype == np.float64
        for key, expr in fx.get("state_exprs", {}).items():  # e.g. schedule-free's state.z
            rows = fx.setdefault("recorded_states", {}).setdefault(key, [])
            rows.append(flat(eval(expr, {"state": state})).copy())
    return np.array(out)


def record_keras(fx: dict, problem: dict[str, np.ndarray]) -> np.ndarray:
    _jax64()
    os.environ.setdefault("KERAS_BACKEND", "jax")  # read when keras is first imported
    import keras

    assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax (the default here)"
    keras.config.set_floatx("float64")
    a, b = matrix(problem), problem["b"]
    slices = tensor_slices(fx) or [[0, N_PARAMS]]
    shapes = fx.get("tensors") or [[N_PARAMS]]
    w0 = problem["w0"]
    ws = [keras.Variable(w0[lo:hi].reshape(shape), dtype="float64")
          for (lo, hi), shape in zip(slices, shapes, strict=True)]  # fmt: skip
    opt = eval(fx["reference"], {"keras": keras})  # the reference text is the call itself

    def flat() -> np.ndarray:
        return np.concatenate([np.ravel(np.asarray(w.value)) for w in ws])

    out = []
    for _ in range(STEPS):
        g = fx.get("grad_scale", 1.0) * gradient(a, b, flat())
        opt.apply_gradients([
            (keras.ops.convert_to_tensor(g[lo:hi].reshape(shape), dtype="float64"), w)
            for (lo, hi), shape, w in zip(slices, shapes, ws, strict=True)
        ])  # fmt: skip
        assert all(w.dtype == "float64" for w in ws)
        out.append(flat().copy())
        for key, expr in fx.get("state_exprs", {}).items():  # e.g. opt._momentums (z)
            rows = fx.setdefault("recorded_states", {}).setdefault(key, [])
            rows.append(np.concatenate([np.ravel(np.asarray(v.value))
                                        for v in eval(expr, {"opt": opt})]))  # fmt: skip
    return np.array(out)


RECORDERS = {"torch": record_torch, "optax": record_optax, "keras": record_keras}
LIBRARIES = {"torch": ("PyTorch", "torch"), "optax": ("optax", "optax"),
             "keras": ("Keras 3", "keras")}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The fixtures.
# ---------------------------------------------------------------------------------------------


def _fmt(v: object) -> str:
    return repr(tuple(v)) if isinstance(v, list | tuple) else repr(v)


def torch_fx(optimizer: str, detail: str, kwargs: dict, *, torch_class: str | None = None,
             minnet_extra: dict | None = None, **more) -> dict:  # fmt: skip
    """A torch fixture; ``kwargs`` are passed to torch and (with minnet_extra) to minnet."""
    torch_class = torch_class or optimizer
    call = ", ".join(f"{k}={_fmt(v)}" for k, v in kwargs.items())
    ref = f"torch.optim.{torch_class}(params, {call}, foreach=False)"
    if more.get("groups"):
        ref = f"torch.optim.{torch_class}([{{'params': [w[a:b]], **group}}...], {call}, ...)"
    if more.get("scheduler"):
        s = more["scheduler"]
        skw = ", ".join(f"{k}={_fmt(v)}" for k, v in s["kwargs"].items())
        ref += f"; torch.optim.lr_scheduler.{s['name']}(opt, {skw}).step() after each step"
    return dict(optimizer=optimizer, lib="torch", detail=detail, torch_class=torch_class,
                torch_kwargs=dict(kwargs), minnet_kwargs={**kwargs, **(minnet_extra or {})},
                reference=ref, **more)  # fmt: skip


def build_fixtures() -> list[dict]:
    """Every fixture to record (name, library, call, minnet kwargs, options)."""
    fx: list[dict] = []
    b_small = (0.9, 0.999)
    b_short = (0.8, 0.99)
    # SGD: no eps. Maximize is recorded on the negated gradient (grad_scale=-1), so it converges.
    fx += [
        torch_fx("SGD", "plain", dict(lr=0.02)),
        torch_fx("SGD", "momentum_dampening", dict(lr=0.01, momentum=0.9, dampening=0.3)),
        torch_fx("SGD", "nesterov_wd", dict(lr=0.01, momentum=0.8, nesterov=True,
                                            weight_decay=0.05)),
        torch_fx("SGD", "maximize_momentum_wd", dict(lr=0.01, momentum=0.5, weight_decay=0.02,
                                                     maximize=True), grad_scale=-1.0),
    ]  # fmt: skip
    for eps, betas, lr in ((1e-8, b_small, 1e-2), (1e-3, b_short, 3e-3)):
        tag = f"eps{eps:.0e}".replace("e-0", "e-")
        fx += [
            torch_fx("Adam", f"decoupled_wd_{tag}", dict(lr=lr, betas=betas, eps=eps,
                     weight_decay=0.1, decoupled_weight_decay=True),
                     minnet_extra=dict(eps_mode="outside")),
            torch_fx("Adam", f"plain_{tag}", dict(lr=lr, betas=betas, eps=eps),
                     minnet_extra=dict(eps_mode="outside")),
            torch_fx("AdamW", f"wd_{tag}", dict(lr=lr, betas=betas, eps=eps, weight_decay=0.1),
                     minnet_extra=dict(eps_mode="outside")),
        ]  # fmt: skip
    # RMSprop: alpha=0.99 and lr=1e-3 (at alpha=0.9 or lr=1e-2 the steps are sign-like near the
    # minimum and the trajectory is chaotic: a 1e-13 change of w0 grows past 1e-3).
    for eps in (1e-8, 1e-3):
        tag = f"eps{eps:.0e}".replace("e-0", "e-")
        out = dict(eps_mode="outside")
        fx += [
            torch_fx("RMSprop", f"plain_{tag}", dict(lr=1e-3, alpha=0.99, eps=eps),
                     minnet_extra=out),
            torch_fx("RMSprop", f"centered_{tag}", dict(lr=1e-3, alpha=0.99, eps=eps,
                     centered=True), minnet_extra=out),
            torch_fx("RMSprop", f"momentum_{tag}", dict(lr=1e-3, alpha=0.99, eps=eps,
                     momentum=0.8), minnet_extra=out),
        ]  # fmt: skip
        fx += [
            dict(optimizer="RMSprop", lib="keras", detail=f"plain_{tag}",
                 reference=f"keras.optimizers.RMSprop(learning_rate=0.001, rho=0.99, "
                           f"momentum=0.0, epsilon={eps!r}, centered=False)",
                 minnet_kwargs=dict(lr=0.001, alpha=0.99, eps=eps, eps_mode="inside")),
            dict(optimizer="RMSprop", lib="keras", detail=f"centered_{tag}",
                 reference=f"keras.optimizers.RMSprop(learning_rate=0.001, rho=0.99, "
                           f"momentum=0.0, epsilon={eps!r}, centered=True)",
                 minnet_kwargs=dict(lr=0.001, alpha=0.99, eps=eps, centered=True,
                                    eps_mode="inside")),
            dict(optimizer="RMSprop", lib="optax", detail=f"plain_{tag}",
                 reference=f"optax.rmsprop(0.001, decay=0.99, eps={eps!r}, eps_in_sqrt=True)",
                 minnet_kwargs=dict(lr=0.001, alpha=0.99, eps=eps, eps_mode="inside")),
            dict(optimizer="RMSprop", lib="optax", detail=f"momentum_constlr_{tag}",
                 reference=f"optax.rmsprop(0.001, decay=0.99, eps={eps!r}, eps_in_sqrt=True, "
                           f"momentum=0.8)",
                 note="optax keeps lr inside the momentum buffer (buf = m*buf + lr*g/D, "
                      "w -= buf); equal to PyTorch's (w -= lr*buf) only because lr is constant",
                 minnet_kwargs=dict(lr=0.001, alpha=0.99, eps=eps, momentum=0.8,
                                    eps_mode="inside")),
        ]  # fmt: skip
    fx.append(torch_fx("RMSprop", "wd_eps1e-3", dict(lr=1e-3, alpha=0.99, eps=1e-3,
                                                     weight_decay=0.05),
                       minnet_extra=dict(eps_mode="outside")))  # fmt: skip
    # Adagrad
    for eps in (1e-10, 1e-3):
        tag = f"eps{eps:.0e}".replace("e-0", "e-")
        out = dict(eps_mode="outside")
        fx += [
            torch_fx("Adagrad", f"plain_{tag}", dict(lr=0.1, eps=eps), minnet_extra=out),
            torch_fx("Adagrad", f"decay_init_wd_{tag}", dict(lr=0.1, lr_decay=0.01,
                     initial_accumulator_value=0.1, weight_decay=0.05, eps=eps),
                     minnet_extra=out),
        ]  # fmt: skip
    for eps in (1e-7, 1e-3):
        tag = f"eps{eps:.0e}".replace("e-0", "e-")
        # Keras's default initial 0.1 hides eps (the default placement then misses by < 1e-3).
        fx += [
            dict(optimizer="Adagrad", lib="keras", detail=f"init0_{tag}",
                 reference=f"keras.optimizers.Adagrad(learning_rate=0.1, "
                           f"initial_accumulator_value=0.0, epsilon={eps!r})",
                 minnet_kwargs=dict(lr=0.1, initial_accumulator_value=0.0, eps=eps,
                                    eps_mode="inside")),
            dict(optimizer="Adagrad", lib="optax", detail=f"init0_{tag}",
                 reference=f"optax.adagrad(0.1, initial_accumulator_value=0.0, eps={eps!r})",
                 minnet_kwargs=dict(lr=0.1, initial_accumulator_value=0.0, eps=eps,
                                    eps_mode="inside_guarded")),
        ]  # fmt: skip
    fx.append(
        dict(optimizer="Adagrad", lib="optax", detail="init0_eps0",
             reference="optax.adagrad(0.1, initial_accumulator_value=0.0, eps=0.0)",
             note="eps=0 with a zero initial accumulator: the all-zero gradient columns get 0 "
                  "from optax's guard, where 0/sqrt(0) would be NaN",
             minnet_kwargs=dict(lr=0.1, initial_accumulator_value=0.0, eps=0.0,
                                eps_mode="inside_guarded"))
    )  # fmt: skip
    # Adadelta (many (lr, rho, eps) are chaotic on this problem; these are not).
    fx += [
        torch_fx("Adadelta", "lr1_rho0.9_eps1e-3", dict(lr=1.0, rho=0.9, eps=1e-3)),
        torch_fx("Adadelta", "lr0.3_rho0.95_eps1e-6", dict(lr=0.3, rho=0.95, eps=1e-6)),
        torch_fx("Adadelta", "wd_eps1e-6", dict(lr=0.3, rho=0.95, eps=1e-6, weight_decay=0.05)),
        torch_fx("Adadelta", "wd_eps1e-3", dict(lr=1.0, rho=0.95, eps=1e-3, weight_decay=0.05)),
    ]
    for eps in (1e-7, 1e-3):
        tag = f"eps{eps:.0e}".replace("e-0", "e-")
        fx.append(
            dict(optimizer="Adadelta", lib="keras", detail=f"rho0.95_{tag}",
                 reference=f"keras.optimizers.Adadelta(learning_rate=1.0, rho=0.95, "
                           f"epsilon={eps!r})",
                 minnet_kwargs=dict(lr=1.0, rho=0.95, eps=eps))
        )  # fmt: skip
    # Adamax: "max" and "outside" differ where b2*u wins the max (tiny and decaying columns).
    for eps, betas, lr in ((1e-8, b_small, 1e-2), (1e-2, b_small, 3e-2)):
        tag = f"eps{eps:.0e}".replace("e-0", "e-")
        fx += [
            torch_fx("Adamax", tag, dict(lr=lr, betas=betas, eps=eps),
                     minnet_extra=dict(eps_mode="max")),
            dict(optimizer="Adamax", lib="optax", detail=tag,
                 reference=f"optax.adamax({lr!r}, b1={betas[0]!r}, b2={betas[1]!r}, eps={eps!r})",
                 minnet_kwargs=dict(lr=lr, betas=betas, eps=eps, eps_mode="max")),
            dict(optimizer="Adamax", lib="keras", detail=tag,
                 reference=f"keras.optimizers.Adamax(learning_rate={lr!r}, beta_1={betas[0]!r}, "
                           f"beta_2={betas[1]!r}, epsilon={eps!r})",
                 minnet_kwargs=dict(lr=lr, betas=betas, eps=eps, eps_mode="outside")),
        ]  # fmt: skip
    fx.append(torch_fx("Adamax", "wd_eps1e-3", dict(lr=2e-3, betas=b_short, eps=1e-3,
                                                    weight_decay=0.05),
                       minnet_extra=dict(eps_mode="max")))  # fmt: skip
    # optax's AdamaxW: Adamax ("max") with the decay added to the update and scaled by lr.
    for eps, lr in ((1e-8, 1e-2), (1e-2, 3e-2)):
        tag = f"adamaxw_wd0.1_eps{eps:.0e}".replace("e-0", "e-")
        fx.append(
            dict(optimizer="Adamax", lib="optax", detail=tag,
                 reference=f"optax.adamaxw({lr!r}, b1=0.9, b2=0.999, eps={eps!r}, "
                           f"weight_decay=0.1)",
                 minnet_kwargs=dict(lr=lr, betas=b_small, eps=eps, weight_decay=0.1,
                                    eps_mode="max", decoupled_weight_decay=True))
        )  # fmt: skip
    # NAdam, RAdam
    for eps, betas, lr in ((1e-8, b_small, 2e-3), (1e-3, b_short, 5e-3)):
        tag = f"eps{eps:.0e}".replace("e-0", "e-")
        fx += [
            torch_fx("NAdam", f"momentum_decay_{tag}", dict(lr=lr, betas=betas, eps=eps,
                     momentum_decay=0.01)),
            torch_fx("NAdam", f"decoupled_wd_{tag}", dict(lr=lr, betas=betas, eps=eps,
                     weight_decay=0.1, decoupled_weight_decay=True)),
            torch_fx("RAdam", f"plain_{tag}", dict(lr=lr, betas=betas, eps=eps)),
            torch_fx("RAdam", f"decoupled_wd_{tag}", dict(lr=lr, betas=betas, eps=eps,
                     weight_decay=0.1, decoupled_weight_decay=True)),
        ]  # fmt: skip
    # optax's NAdam (Nesterov Adam, no mu_t schedule), NAdamW and RAdam (eps after the bias
    # correction, rectified from rho_t >= 5): variant="optax".
    for eps, betas, lr in ((1e-8, b_small, 2e-3), (1e-3, b_short, 5e-3)):
        tag = f"eps{eps:.0e}".replace("e-0", "e-")
        b = f"b1={betas[0]!r}, b2={betas[1]!r}, eps={eps!r}"
        fx += [
            dict(optimizer="NAdam", lib="optax", detail=tag,
                 reference=f"optax.nadam({lr!r}, {b})",
                 minnet_kwargs=dict(lr=lr, betas=betas, eps=eps, variant="optax")),
            dict(optimizer="RAdam", lib="optax", detail=tag,
                 reference=f"optax.radam({lr!r}, {b})",
                 minnet_kwargs=dict(lr=lr, betas=betas, eps=eps, variant="optax")),
        ]  # fmt: skip
    fx.append(
        dict(optimizer="NAdam", lib="optax", detail="nadamw_wd0.1_eps1e-8",
             reference="optax.nadamw(0.002, b1=0.9, b2=0.999, eps=1e-08, weight_decay=0.1)",
             minnet_kwargs=dict(lr=2e-3, betas=b_small, eps=1e-8, weight_decay=0.1,
                                decoupled_weight_decay=True, variant="optax"))
    )  # fmt: skip
    fx += [
        torch_fx("NAdam", "l2_wd_eps1e-3", dict(lr=5e-3, betas=b_short, eps=1e-3,
                                                weight_decay=0.05)),
        torch_fx("RAdam", "l2_wd_eps1e-3", dict(lr=5e-3, betas=b_short, eps=1e-3,
                                                weight_decay=0.05)),
    ]  # fmt: skip
    # AdaBelief (optax): eps outside the root, eps_root stored in s every step.
    for eps, eps_root, betas, lr in ((1e-16, 1e-16, b_small, 1e-2), (1e-8, 1e-8, b_small, 1e-2),
                                     (1e-3, 0.0, b_short, 3e-3), (0.0, 1e-4, b_short, 3e-3)):
        tag = f"eps{eps:.0e}_root{eps_root:.0e}".replace("e-0", "e-").replace("0e+00", "0")
        fx.append(
            dict(optimizer="AdaBelief", lib="optax", detail=tag,
                 reference=f"optax.adabelief({lr!r}, b1={betas[0]!r}, b2={betas[1]!r}, "
                           f"eps={eps!r}, eps_root={eps_root!r})",
                 minnet_kwargs=dict(lr=lr, betas=betas, eps=eps, eps_root=eps_root))
        )  # fmt: skip
    # Lion: no eps.
    fx += [
        dict(optimizer="Lion", lib="optax", detail="wd0",
             reference="optax.lion(1e-3, b1=0.9, b2=0.99, weight_decay=0.0)",
             minnet_kwargs=dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0)),
        dict(optimizer="Lion", lib="optax", detail="wd0.1",
             reference="optax.lion(3e-4, b1=0.8, b2=0.95, weight_decay=0.1)",
             minnet_kwargs=dict(lr=3e-4, betas=(0.8, 0.95), weight_decay=0.1)),
        dict(optimizer="Lion", lib="keras", detail="wd0",
             reference="keras.optimizers.Lion(learning_rate=1e-3, beta_1=0.9, beta_2=0.99)",
             minnet_kwargs=dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0)),
        dict(optimizer="Lion", lib="keras", detail="wd0.1",
             reference="keras.optimizers.Lion(learning_rate=3e-4, beta_1=0.8, beta_2=0.95, "
                       "weight_decay=0.1)",
             minnet_kwargs=dict(lr=3e-4, betas=(0.8, 0.95), weight_decay=0.1)),
    ]  # fmt: skip
    # Rprop: no eps. PyTorch's (prev = the gradient, 0 after a sign flip) and optax's (prev =
    # the previous update, applied one step late: its first step moves nothing).
    fx += [
        torch_fx("Rprop", "defaults", dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50)),
                 minnet_extra=dict(variant="torch")),
        torch_fx("Rprop", "etas_steps_maximize", dict(lr=3e-3, etas=(0.3, 1.5),
                 step_sizes=(1e-8, 0.1), maximize=True), grad_scale=-1.0,
                 minnet_extra=dict(variant="torch")),
        dict(optimizer="Rprop", lib="optax", detail="defaults",
             reference="optax.rprop(0.01, eta_minus=0.5, eta_plus=1.2, min_step_size=1e-06, "
                       "max_step_size=50.0)",
             minnet_kwargs=dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0),
                                variant="optax")),
        dict(optimizer="Rprop", lib="optax", detail="etas_steps",
             reference="optax.rprop(0.003, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-08, "
                       "max_step_size=0.1)",
             minnet_kwargs=dict(lr=3e-3, etas=(0.3, 1.5), step_sizes=(1e-8, 0.1),
                                variant="optax")),
    ]  # fmt: skip
    # ASGD: no eps; t0 within the 300 steps so that the average (ax, recorded too) moves.
    fx += [
        torch_fx("ASGD", "defaults", dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6),
                 state_keys=["ax"]),
        torch_fx("ASGD", "t0_50_lambd_wd", dict(lr=2e-2, lambd=1e-2, alpha=0.6, t0=50.0,
                 weight_decay=0.05), state_keys=["ax"]),
        torch_fx("ASGD", "t0_0_maximize", dict(lr=1e-2, lambd=1e-3, alpha=0.75, t0=0.0,
                 maximize=True), grad_scale=-1.0, state_keys=["ax"]),
    ]  # fmt: skip
    # Yogi (optax): both moments start at 1e-6; eps outside the root, default 1e-3 (dominates
    # the small columns) and 0.1 (dominates all but the largest).
    for eps, betas, lr in ((1e-3, b_small, 1e-2), (1e-1, b_short, 3e-2), (1e-8, b_small, 1e-3)):
        tag = f"eps{eps:.0e}".replace("e-0", "e-")
        fx.append(
            dict(optimizer="Yogi", lib="optax", detail=tag,
                 reference=f"optax.yogi({lr!r}, b1={betas[0]!r}, b2={betas[1]!r}, eps={eps!r})",
                 minnet_kwargs=dict(lr=lr, betas=betas, eps=eps))
        )  # fmt: skip
    # ADOPT (optax.contrib): eps a floor under sqrt(v), default 1e-6 and 1e-2 (the floor wins
    # on the small columns); the clip at (t-1)**0.25; Nesterov; without clipping.
    for eps, betas, lr, extra in ((1e-6, (0.9, 0.9999), 1e-2, {}),
                                  (1e-2, b_short, 3e-3, {}),
                                  (1e-6, b_short, 3e-3, {"nesterov": True}),
                                  (1e-2, (0.9, 0.9999), 1e-3, {"use_clipping": False})):
        tag = f"eps{eps:.0e}".replace("e-0", "e-")
        call = "".join(f", {k}={v!r}" for k, v in extra.items())
        fx.append(
            dict(optimizer="ADOPT", lib="optax",
                 detail="_".join([tag, *(k if v else f"no_{k.split('_')[-1]}"
                                         for k, v in extra.items())]),
                 reference=f"optax.contrib.adopt({lr!r}, b1={betas[0]!r}, b2={betas[1]!r}, "
                           f"eps={eps!r}{call})",
                 minnet_kwargs=dict(lr=lr, betas=betas, eps=eps, **extra))
        )  # fmt: skip
    # Adan (optax): eps_root inside the root, eps outside. The alias's defaults (both 1e-8:
    # eps_root dominates where n_hat < 1e-8); eps=1e-3 alone (dominates the small columns);
    # eps_root=1e-8 alone; and the weight decay (added to the update, scaled by lr).
    for eps, eps_root, lr, wd, tag in ((1e-8, 1e-8, 1e-2, 0.0, "defaults"),
                                       (1e-3, 0.0, 1e-2, 0.0, "eps1e-3_root0"),
                                       (0.0, 1e-8, 1e-2, 0.0, "eps0_root1e-8"),
                                       (1e-8, 1e-8, 1e-2, 0.1, "defaults_wd0.1")):
        betas = (0.98, 0.92, 0.99)
        fx.append(
            dict(optimizer="Adan", lib="optax", detail=tag,
                 reference=f"optax.adan({lr!r}, b1={betas[0]!r}, b2={betas[1]!r}, "
                           f"b3={betas[2]!r}, eps={eps!r}, eps_root={eps_root!r}, "
                           f"weight_decay={wd!r})",
                 minnet_kwargs=dict(lr=lr, betas=betas, eps=eps, eps_root=eps_root,
                                    weight_decay=wd))
        )  # fmt: skip
    # AdEMAMix (optax.contrib): eps outside the root. The alias's defaults; eps=1e-3 (dominates
    # the small columns); the weight decay; eps_root alone. b3 = 0.999 in the last three, so
    # that the slow EMA (not bias-corrected) fills within the 300 steps.
    for betas, alpha, eps, eps_root, lr, wd, tag in (
            ((0.9, 0.999, 0.9999), 5.0, 1e-8, 0.0, 1e-3, 0.0, "defaults"),
            ((0.9, 0.999, 0.999), 5.0, 1e-3, 0.0, 1e-3, 0.0, "eps1e-3"),
            ((0.8, 0.99, 0.999), 2.0, 1e-8, 0.0, 1e-3, 0.1, "eps1e-8_wd0.1"),
            ((0.9, 0.999, 0.999), 5.0, 0.0, 1e-8, 1e-3, 0.0, "eps0_root1e-8")):
        fx.append(
            dict(optimizer="AdEMAMix", lib="optax", detail=tag,
                 reference=f"optax.contrib.ademamix({lr!r}, b1={betas[0]!r}, b2={betas[1]!r}, "
                           f"b3={betas[2]!r}, alpha={alpha!r}, eps={eps!r}, "
                           f"eps_root={eps_root!r}, weight_decay={wd!r})",
                 minnet_kwargs=dict(lr=lr, betas=betas, alpha=alpha, eps=eps, eps_root=eps_root,
                                    weight_decay=wd))
        )  # fmt: skip
    # Ftrl (Keras 3): no eps argument; initial_accumulator_value (eps inside the root, the one
    # minnet sweeps) at its default 0.1 and at 1e-6, where it is the whole early denominator of
    # the small columns (and of the all-zero ones: w stays 0 there, not 0/0); the three
    # regularizations; beta (eps outside the root) > 0; learning_rate_power other than -0.5.
    ftrl = (
        ("defaults", 0.05, {}),
        ("init1e-6", 0.05, {"initial_accumulator_value": 1e-6}),
        ("l1_l2_shrinkage", 0.05, {"l1_regularization_strength": 1e-3,
                                   "l2_regularization_strength": 0.1,
                                   "l2_shrinkage_regularization_strength": 0.05}),
        ("beta0.5", 0.05, {"beta": 0.5}),
        ("power-0.3_init1e-6", 0.02, {"learning_rate_power": -0.3,
                                      "initial_accumulator_value": 1e-6}),
    )  # fmt: skip
    for tag, lr, extra in ftrl:
        call = "".join(f", {k}={v!r}" for k, v in extra.items())
        fx.append(
            dict(optimizer="Ftrl", lib="keras", detail=tag,
                 reference=f"keras.optimizers.Ftrl(learning_rate={lr!r}{call})",
                 minnet_kwargs=dict(lr=lr, **extra))
        )  # fmt: skip
    # SignSGD and Signum (optax): no eps; sign(0) = 0 keeps the all-zero columns where they are.
    fx += [
        dict(optimizer="SignSGD", lib="optax", detail="lr1e-3",
             reference="optax.sign_sgd(0.001)", minnet_kwargs=dict(lr=1e-3)),
        dict(optimizer="SignSGD", lib="optax", detail="lr1e-4",
             reference="optax.sign_sgd(0.0001)", minnet_kwargs=dict(lr=1e-4)),
        dict(optimizer="Signum", lib="optax", detail="beta0.9",
             reference="optax.signum(0.001, beta=0.9)", minnet_kwargs=dict(lr=1e-3, beta=0.9)),
        dict(optimizer="Signum", lib="optax", detail="beta0.5",
             reference="optax.signum(0.0003, beta=0.5)",
             minnet_kwargs=dict(lr=3e-4, beta=0.5)),
    ]  # fmt: skip
    # Lamb (Keras 3 and optax) and Lars (optax): per-tensor trust ratios over the TENSORS split
    # of w (three parameters of different shapes). Lamb's eps at each default and at 1e-2, where
    # it dominates sqrt(v_hat) on the small columns; optax's weight decay before the ratio.
    for variant, eps, lr, wd in (("keras", 1e-7, 1e-2, 0.0), ("keras", 1e-2, 1e-2, 0.0),
                                 ("optax", 1e-6, 1e-2, 0.0), ("optax", 1e-2, 3e-3, 0.1)):
        tag = f"eps{eps:.0e}".replace("e-0", "e-") + (f"_wd{wd:g}" if wd else "")
        if variant == "keras":
            ref = (f"keras.optimizers.Lamb(learning_rate={lr!r}, beta_1=0.9, beta_2=0.999, "
                   f"epsilon={eps!r})")
        else:
            ref = f"optax.lamb({lr!r}, b1=0.9, b2=0.999, eps={eps!r}, weight_decay={wd!r})"
        fx.append(
            dict(optimizer="Lamb", lib=variant, detail=tag, reference=ref, tensors=TENSORS,
                 minnet_kwargs=dict(lr=lr, betas=(0.9, 0.999), eps=eps, weight_decay=wd,
                                    variant=variant))
        )  # fmt: skip
    # Lars (optax): defaults; eps=1e-3 dominating ||u|| (gradients scaled by 1e-6); Nesterov;
    # weight decay before the ratio. lr=0.1: at lr=1 the normalised steps oscillate around the
    # minimum and the trajectory is chaotic (a 1e-16 change grows past 1e-9).
    for detail, kw, scale in (("defaults", {}, 1.0),
                              ("eps1e-3_tiny_grads", {"eps": 1e-3}, 1e-6),
                              ("nesterov", {"nesterov": True, "momentum": 0.8}, 1.0),
                              ("wd", {"weight_decay": 1e-2, "trust_coefficient": 2e-3}, 1.0)):
        call = "".join(f", {k}={v!r}" for k, v in kw.items())
        fx.append(
            dict(optimizer="Lars", lib="optax", detail=detail, tensors=TENSORS,
                 grad_scale=scale, reference=f"optax.lars(0.1{call})",
                 minnet_kwargs=dict(lr=0.1, **kw))
        )  # fmt: skip
    # OptimisticAdam (optax, deprecated there for optimistic_adam_v2): the alias's defaults
    # (nesterov=True, optimism = lr); eps=1e-3 dominating sqrt(v_hat) on the small columns;
    # an explicit optimism without Nesterov; eps_root alone inside the root.
    for detail, lr, kw in (("defaults", 1e-2, {}),
                           ("eps1e-3", 3e-3, {"betas": (0.8, 0.99), "eps": 1e-3}),
                           ("optimism0.03_no_nesterov", 1e-2, {"optimism": 0.03,
                                                               "nesterov": False}),
                           ("eps0_root1e-8", 1e-2, {"eps": 0.0, "eps_root": 1e-8})):
        betas = kw.get("betas", b_small)
        call = "".join(f", {k}={v!r}" for k, v in kw.items() if k not in ("betas", "nesterov"))
        if "nesterov" in kw:
            call += f", nesterov={kw['nesterov']!r}"
        fx.append(
            dict(optimizer="OptimisticAdam", lib="optax", detail=detail,
                 reference=f"optax.optimistic_adam({lr!r}, b1={betas[0]!r}, b2={betas[1]!r}"
                           f"{call})",
                 minnet_kwargs=dict(lr=lr, **{"betas": betas, **kw}))
        )  # fmt: skip
    # ScheduleFreeAdamW (optax and Keras 3), the same settings in both: eps at the default and
    # at 1e-3 (it dominates sqrt(v_hat) on the small columns), and warm-up with weight decay,
    # where the two libraries differ. z recorded too (the state the eval point comes from).
    for variant in ("optax", "keras"):
        for detail, kw in (("eps1e-8", dict(eps=1e-8)), ("eps1e-3", dict(eps=1e-3)),
                           ("warmup50_wd0.05", dict(eps=1e-8, warmup_steps=50,
                                                    weight_decay=0.05))):
            lr, wd, warm = 1e-2, kw.get("weight_decay", 0.0), kw.get("warmup_steps", 0)
            if variant == "optax":
                ref = (f"optax.contrib.schedule_free_adamw({lr!r}, warmup_steps={warm or None!r}, "
                       f"b1=0.9, b2=0.999, eps={kw['eps']!r}, weight_decay={wd!r})")
                exprs = {"z": "state.z"}
            else:
                ref = (f"keras.optimizers.ScheduleFreeAdamW(learning_rate={lr!r}, beta_1=0.9, "
                       f"beta_2=0.999, epsilon={kw['eps']!r}, warmup_steps={warm!r}, "
                       f"weight_decay={wd or None!r})")
                exprs = {"z": "opt._momentums"}
            fx.append(
                dict(optimizer="ScheduleFreeAdamW", lib=variant, detail=detail, reference=ref,
                     state_keys=["z"], state_exprs=exprs,
                     minnet_kwargs=dict(lr=lr, betas=(0.9, 0.999), variant=variant, **kw))
            )  # fmt: skip
    # Prodigy (optax): one distance estimate d over the whole model, so w is split into the
    # TENSORS leaves (three parameters, one global sum). eps at the default and at 1e-3 with
    # gradients scaled by 1e-3 (eps*d dominates sqrt(v) on most coordinates), weight decay with
    # beta3, and safeguard_warmup with estim_lr_coef.
    for detail, kw, scale in (("defaults", {}, 1.0),
                              ("eps1e-3_small_grads", {"eps": 1e-3}, 1e-3),
                              ("wd_beta3", {"weight_decay": 0.05, "beta3": 0.99}, 1.0),
                              ("safeguard_coef", {"safeguard_warmup": True,
                                                  "estim_lr_coef": 0.5}, 1.0)):
        lr = 0.5
        call = "".join(f", {k}={_fmt(v)}" for k, v in kw.items())
        fx.append(
            dict(optimizer="Prodigy", lib="optax", detail=detail, tensors=TENSORS,
                 global_reduction=True, grad_scale=scale,
                 reference=f"optax.contrib.prodigy({lr!r}{call})",
                 minnet_kwargs=dict(lr=lr, **kw))
        )  # fmt: skip
    # Novograd and Fromage (optax): per-tensor norms over the TENSORS split, as Lamb. Novograd's
    # eps at its default and at 1e-3 dominating sqrt(nu) (gradients scaled by 1e-6), with weight
    # decay, with eps_root; Fromage's min_norm (its eps, a floor on both norms) at its default
    # and at 1e-3 dominating ||g|| (gradients scaled by 1e-6). Zero-norm tensors: the (40,)
    # tensor's gradient is 0 at every step and the (3, 4, 6) tensor starts at 0 (Novograd with
    # weight decay, so that the zero-gradient tensor moves; Fromage at min_norm 1e-6 and 0).
    zeros = dict(zero_grad_tensors=[1], zero_param_tensors=[2])
    for detail, kw, scale, more in (
        ("defaults", {}, 1.0, {}),
        ("eps1e-3_tiny_grads", {"eps": 1e-3}, 1e-6, {}),
        ("wd0.01", {"weight_decay": 0.01}, 1.0, {}),
        ("eps0_root1e-4", {"eps": 0.0, "eps_root": 1e-4}, 1.0, {}),
        ("zero_tensors_wd0.01", {"weight_decay": 0.01}, 1.0, zeros),
    ):
        call = "".join(f", {k}={v!r}" for k, v in kw.items())
        fx.append(
            dict(optimizer="Novograd", lib="optax", detail=detail, tensors=TENSORS,
                 grad_scale=scale, reference=f"optax.novograd(0.001{call})",
                 minnet_kwargs=dict(lr=1e-3, **kw), **more)
        )  # fmt: skip
    for detail, kw, scale, more in (
        ("defaults", {}, 1.0, {}),
        ("min_norm1e-3_tiny_grads", {"min_norm": 1e-3}, 1e-6, {}),
        ("zero_tensors", {}, 1.0, zeros),
        ("zero_tensors_min_norm0", {"min_norm": 0.0}, 1.0, zeros),
    ):
        call = "".join(f", {k}={v!r}" for k, v in kw.items())
        fx.append(
            dict(optimizer="Fromage", lib="optax", detail=detail, tensors=TENSORS,
                 grad_scale=scale, reference=f"optax.fromage(0.01{call})",
                 minnet_kwargs=dict(lr=0.01, **kw), **more)
        )  # fmt: skip
    # Parameter groups: the second group overrides lr and eps.
    groups = [{"slice": [0, SPLIT]}, {"slice": [SPLIT, N_PARAMS], "lr": 3e-3, "eps": 1e-3}]
    fx += [
        torch_fx("Adam", "groups", dict(lr=1e-2, betas=b_small, eps=1e-8),
                 minnet_extra=dict(eps_mode="outside"), groups=groups),
        torch_fx("RMSprop", "groups", dict(lr=1e-3, alpha=0.99, eps=1e-8),
                 minnet_extra=dict(eps_mode="outside"),
                 groups=[groups[0], {"slice": [SPLIT, N_PARAMS], "lr": 3e-4, "eps": 1e-3}]),
    ]  # fmt: skip
    # Schedules.
    fx += [
        torch_fx("Adam", "steplr", dict(lr=2e-2, betas=b_small, eps=1e-8),
                 minnet_extra=dict(eps_mode="outside"),
                 scheduler={"name": "StepLR", "kwargs": {"step_size": 50, "gamma": 0.5}}),
        torch_fx("Adam", "cosine", dict(lr=2e-2, betas=b_small, eps=1e-8),
                 minnet_extra=dict(eps_mode="outside"),
                 scheduler={"name": "CosineAnnealingLR",
                            "kwargs": {"T_max": 120, "eta_min": 1e-4}}),
    ]  # fmt: skip
    # float32 recordings.
    f32 = [
        torch_fx("Adam", "f32", dict(lr=1e-2, betas=b_small, eps=1e-8),
                 minnet_extra=dict(eps_mode="outside")),
        torch_fx("RMSprop", "f32", dict(lr=1e-3, alpha=0.99, eps=1e-8, centered=True),
                 minnet_extra=dict(eps_mode="outside")),
        torch_fx("Adagrad", "f32", dict(lr=0.1, eps=1e-10, initial_accumulator_value=0.1),
                 minnet_extra=dict(eps_mode="outside")),
        torch_fx("SGD", "f32", dict(lr=0.01, momentum=0.9, nesterov=True)),
    ]  # fmt: skip
    for f in f32:
        f["dtype"] = "float32"
    fx += f32
    for f in fx:
        f.setdefault("dtype", "float64")
        placement = f["minnet_kwargs"].get("eps_mode", "none")
        f["name"] = f"family_{f['optimizer'].lower()}_{placement}_{f['lib']}_{f['detail']}"
    names = [f["name"] for f in fx]
    assert len(set(names)) == len(names), "duplicate fixture names"
    return fx


#: optax.noisy_sgd's fixture: one file, the draws of key 0 stored once, two runs replayed on them.
NOISY_FILE = "noisy_sgd_optax.npz"
NOISY_RUNS = (("defaults", 1e-2, 0.01, 0.55), ("eta0.1_gamma1", 3e-3, 0.1, 1.0))


def noisy_draws(key: int) -> np.ndarray:
    """The standard normal numbers optax.noisy_sgd(key=key) adds at every step, shape
    (STEPS, N_PARAMS): add_noise splits its key every step (``rng_key, sample_key =
    split(rng_key)``), optax.tree.random_like splits ``sample_key`` once per leaf (one leaf
    here) and draws ``jax.random.normal(leaf_key, shape, float64)``."""
    jax = _jax64()
    import jax.numpy as jnp

    k = jax.random.key(key)  # optax's utils.canonicalize_key of an int
    out = []
    for _ in range(STEPS):
        k, sample = jax.random.split(k)
        leaf = jax.random.split(sample, 1)[0]
        out.append(np.asarray(jax.random.normal(leaf, (N_PARAMS,), jnp.float64)))
    return np.array(out)


def np_noisy_sgd(problem: dict, lr: float, eta: float, gamma: float, z: np.ndarray,
                 w0: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """NumPy transcription of optax.noisy_sgd given its draws ``z``; parameters after each
    step: ``w -= lr * (g + sqrt(eta / t**gamma) * z_t)``."""
    a, b = matrix(problem), problem["b"]
    w = (problem["w0"] if w0 is None else w0).astype(np.float64)
    out = np.empty((STEPS, N_PARAMS))
    for k in range(STEPS):
        g = gradient(a, b, w)
        w = w + (g + np.sqrt(eta / (k + 1) ** gamma) * z[k]) * -lr
        out[k] = w
    return out


def record_noisy_sgd(out_dir: Path, problem: dict, sha: str) -> None:
    """Record optax.noisy_sgd (key 0) for NOISY_RUNS with the draws, check the transcription
    and the sensitivity, write NOISY_FILE."""
    z = noisy_draws(0)
    runs, arrays = [], {"noise": z}
    for detail, lr, eta, gamma in NOISY_RUNS:
        ref = f"optax.noisy_sgd({lr!r}, eta={eta!r}, gamma={gamma!r}, key=0)"
        traj = record_optax({"reference": ref}, problem)
        ours = np_noisy_sgd(problem, lr, eta, gamma, z)
        gap = max(rel_gap(ours[k], traj[k]) for k in range(STEPS))
        assert gap <= 1e-9, f"noisy_sgd {detail}: transcription differs by {gap:.3g}"
        nudged = np_noisy_sgd(problem, lr, eta, gamma, z, problem["w0"] * (1 + 1e-13))
        amp = max(map(rel_gap, nudged, ours)) / 1e-13
        assert amp < 1e4, f"noisy_sgd {detail}: chaotic ({amp:.3g}x)"
        without = np_noisy_sgd(problem, lr, 0.0, gamma, z)
        print(f"noisy_sgd {detail}: transcription gap {gap:.2g}; sensitivity {amp:.2g}x; "
              f"without the noise {rel_gap(without[-1], traj[-1]):.3g} away")  # fmt: skip
        runs.append({
            "name": f"noisy_sgd_optax_{detail}", "detail": detail, "optimizer": "NoisySGD",
            "minnet_kwargs": {"lr": lr, "eta": eta, "gamma": gamma}, "library": "optax",
            "library_version": importlib.metadata.version("optax"), "reference": ref,
            "dtype": "float64", "steps": STEPS, "checkpoints": list(CHECKPOINTS),
            "grad_scale": 1.0, "problem": PROBLEM_FILE, "problem_sha256": sha,
        })  # fmt: skip
        arrays[f"checkpoints_{detail}"] = traj[[c - 1 for c in CHECKPOINTS]]
        arrays[f"norms_{detail}"] = np.linalg.norm(traj, axis=1)
    arrays["config"] = np.array(json.dumps({"runs": runs, "noise": "optax's draws, key 0: "
                                            "noise[t - 1] is step t's standard normal z"}))
    np.savez_compressed(out_dir / NOISY_FILE, **arrays)


def rel_gap(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (NaN counts as an infinite gap)."""
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max()
    return float("inf") if not np.isfinite(diff) else float(diff / np.abs(ref).max())


def jsonable(kwargs: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def main() -> None:
    """Record, verify and write every fixture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent.parent / "tests" / "fixtures"
    )
    parser.add_argument("-k", default="", help="only fixtures whose name contains this")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    problem = make_problem()
    np.savez_compressed(args.out / PROBLEM_FILE, **problem)
    sha = problem_sha256(problem)
    if args.k in NOISY_FILE:
        record_noisy_sgd(args.out, problem, sha)
    for fx in build_fixtures():
        if args.k not in fx["name"]:
            continue
        traj = RECORDERS[fx["lib"]](fx, problem)
        dtype = np.dtype(fx["dtype"])
        assert traj.shape == (STEPS, N_PARAMS) and traj.dtype == dtype, (traj.shape, traj.dtype)
        assert np.isfinite(traj).all(), f"{fx['name']}: non-finite parameters"
        lr0 = fx["minnet_kwargs"]["lr"]
        lrs = torch_lrs(fx.get("scheduler"), lr0) if fx["lib"] == "torch" else [lr0] * STEPS
        tol = 1e-9 if dtype == np.float64 else 1e-4
        captured: dict[str, list] = {key: [] for key in fx.get("state_keys", ())}
        ours = transcribe(fx, problem, fx["minnet_kwargs"], lrs, capture=captured)
        for key, rows in captured.items():  # recorded state arrays (ASGD's ax) as well
            lib_rows = fx["recorded_states"][key]
            gap = max(rel_gap(a, b) for a, b in zip(rows, lib_rows, strict=True))
            assert gap <= 1e-9, f"{fx['name']}: state {key} differs by {gap:.3g}"
        gaps = [rel_gap(ours[k], traj[k]) for k in range(STEPS)]
        assert max(gaps) <= tol, (
            f"{fx['name']}: library differs from the NumPy transcription by {max(gaps):.3g} "
            f"(first above tol at step {1 + next(i for i, x in enumerate(gaps) if x > tol)})"
        )
        line = f"{fx['name']}: transcription gap {max(gaps):.2g}"
        # Not chaotic: a relative change of 1e-13 in w0 must stay below 1e-9 after 300 steps.
        nudged = dict(problem, w0=problem["w0"] * (1 + 1e-13))
        fx64 = dict(fx, dtype="float64")
        base = transcribe(fx64, problem, fx["minnet_kwargs"], lrs)
        amp = max(map(rel_gap, transcribe(fx64, nudged, fx["minnet_kwargs"], lrs), base)) / 1e-13
        assert amp < 1e4, f"{fx['name']}: chaotic, a 1e-13 nudge of w0 grows {amp:.3g}x"
        line += f"; sensitivity {amp:.2g}x"
        if fx.get("note", "").startswith("optax keeps lr inside"):
            alt = transcribe(fx, problem, fx["minnet_kwargs"], lrs, {"lr_in_buffer": True})
            line += f"; lr-in-buffer form gap {rel_gap(alt[-1], traj[-1]):.2g}"
        mode = fx["minnet_kwargs"].get("eps_mode")
        default = DEFAULT_EPS_MODE.get(fx["optimizer"])
        if mode is not None and mode != default:
            kw = dict(fx["minnet_kwargs"], eps_mode=default)
            with np.errstate(all="ignore"):
                miss = rel_gap(transcribe(fx, problem, kw, lrs)[-1], traj[-1])
            assert miss > 1e-2, f"{fx['name']}: default eps_mode only {miss:.3g} away"
            line += f"; default placement misses by {miss:.3g}"
        kw = fx["minnet_kwargs"]
        if kw.get("variant") == "optax" and fx["optimizer"] in ("NAdam", "RAdam"):
            alt = dict(kw, variant="torch")
            miss = rel_gap(transcribe(fx, problem, alt, lrs)[-1], traj[-1])
            line += f"; PyTorch's variant misses by {miss:.3g}"
        if fx["optimizer"] == "Adamax" and kw.get("decoupled_weight_decay"):
            alt = dict(kw, decoupled_weight_decay=False)
            miss = rel_gap(transcribe(fx, problem, alt, lrs)[-1], traj[-1])
            line += f"; the L2 form misses by {miss:.3g}"
        label, dist = LIBRARIES[fx["lib"]]
        config = {
            "name": fx["name"],
            "optimizer": fx["optimizer"],
            "minnet_kwargs": jsonable(fx["minnet_kwargs"]),
            "library": label,
            "library_version": importlib.metadata.version(dist),
            "reference": fx["reference"],
            "dtype": fx["dtype"],
            "steps": STEPS,
            "checkpoints": list(CHECKPOINTS),
            "grad_scale": fx.get("grad_scale", 1.0),
            "problem": PROBLEM_FILE,
            "problem_sha256": sha,
        }
        for key in ("groups", "scheduler", "note", "state_keys", "tensors", "global_reduction",
                    "zero_grad_tensors", "zero_param_tensors"):
            if fx.get(key):
                config[key] = fx[key]
        arrays = {
            "config": np.array(json.dumps(config)),
            "checkpoints": traj[[c - 1 for c in CHECKPOINTS]],
            "norms": np.linalg.norm(traj.astype(np.float64), axis=1),
        }
        if fx.get("scheduler"):
            arrays["lrs"] = np.array(lrs)
        for key, rows in fx.get("recorded_states", {}).items():
            arrays[f"state_{key}"] = np.array(rows)[[c - 1 for c in CHECKPOINTS]]
        np.savez_compressed(args.out / f"{fx['name']}.npz", **arrays)
        moved = np.abs(traj[-1] - problem["w0"]).max()
        print(f"{line}; max |w - w0| = {moved:.3g}", flush=True)


if __name__ == "__main__":
    main()
