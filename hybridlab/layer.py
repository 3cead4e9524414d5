"""The black-box layer: a drop-in replacement for ``nn.Linear`` whose matrix is a physical device.

Forward pass: the batch is pushed through the device (``device.query``), then an ordinary
learnable gain and bias are applied (both digital). Backward pass (the book's "The method at a
glance" page; chapters 3 to 5):

* ``dL/dx = A^T v`` comes from the low-rank surrogate ``U S V^T`` (no device query), or from a
  zero-order estimate (method ``zo_only``), or from autograd through the simulator (``oracle``);
* ``dL/dw`` comes from the zero-order estimate of :func:`hybridlab.zo.zo_gradient`.

After every optimizer step the surrogate is brought up to date with the implicit
projector-splitting step (:func:`hybridlab.surrogate.projector_splitting_step`), from queries
only. The update is done lazily at the next forward pass, when the layer sees that ``w`` moved
(call :meth:`BlackBoxLinear.sync` to force it), so the layer works with any ``torch.optim``
optimizer and needs no hook.

Methods (compared in chapter 5 of the book): ``oracle``, ``surrogate`` (the method), ``static``,
``rebuild``, ``frozen``, ``zo_only``, and three competitors that need no surrogate:

* ``twin`` (physics-aware training): forward on the device, backward by autograd through a nominal
  digital twin of the same device kind, with none of the real device's imperfections;
* ``fa`` (feedback alignment, Lillicrap et al. 2016): ``dL/dx = v B`` with a fixed random
  ``B`` (``d_out x d_in``) in place of the unknown ``A``: the layer's own upstream error ``v``
  goes back through a random matrix;
* ``dfa`` (direct feedback alignment, Nokland 2016; Launay et al. 2020): ``dL/dx = e B`` with the
  *network's output error* ``e = dL/d(output)`` projected straight to the layer by a fixed random
  ``B`` (``n_out x d_in``), whatever lies between the layer and the output. The layer needs ``e``,
  which only the network sees: :func:`direct_feedback` registers a hook on the model that hands the
  gradient of its output to every ``dfa`` layer during the backward pass (:func:`replace_linear`
  does it for you). The output error's rows must match the layer's input rows (one output row per
  example, or per token).

``fa`` and ``dfa`` train the device parameters with the ZO estimate of ``dL/dw``, which uses the
exact upstream error ``v`` (the digital layers after the device are differentiable).

Randomness and torch devices: the layer's generator (ZO directions, sketches) lives on the layer's
torch device and moves with ``.to()`` (reseeded deterministically from its state), like the
device's own generator, so no random number crosses between CPU and GPU. Per training step the
host reads back only what decides the control flow: whether ``w`` moved since the last forward
pass (one read), and per device call whether its output is finite (and, in ``configure``, whether
the parameters changed and are finite).

Data parallelism (:mod:`hybridlab.parallel`): every rank holds the same layer state and draws the
same directions and sketches; the attribute :attr:`BlackBoxLinear.batch_gather` lets the layer see
the whole batch where its state depends on it (the first batch's gain calibration and the
``'forward'`` upkeep).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from . import checks
from .devices import Device, make_device
from .layer_settings import UPKEEPS, SurrogateSettings, ZOSettings, _settings
from .lowrank import check_rank, fit_identity, fit_randomized
from .remote.client import RemoteDevice
from .sketch import random_rows
from .surrogate import forward_upkeep, projector_splitting_step, sketched_transpose
from .timing import timed
from .zo import zo_gradient, zo_input_gradient

__all__ = ["METHODS", "UPKEEPS", "BlackBoxLinear", "SurrogateSettings", "ZOSettings", "direct_feedback",
           "replace_linear"]

METHODS: tuple[str, ...] = ("oracle", "surrogate", "static", "rebuild", "frozen", "zo_only", "twin", "fa", "dfa")
"""Training methods of a black-box layer: ``static`` and ``rebuild`` are the surrogate method with the
upkeep ``"none"`` and ``"rebuild"``; ``frozen`` never trains the device (a baseline)."""

_SURROGATE_METHODS = ("surrogate", "static", "rebuild", "frozen")
_METHOD_UPKEEP = {"static": "none", "rebuild": "rebuild", "frozen": "none"}


class _BlackBoxFunction(torch.autograd.Function):
    """y = f(x; w) from device queries; backward from the surrogate and the ZO estimate."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, layer: BlackBoxLinear) -> Tensor:
        y = layer._query(x)
        if layer.training and layer.surrogate.upkeep == "forward" and layer.method in _SURROGATE_METHODS:
            layer._forward_upkeep(x, y)  # the free pairs (x, y) at the current parameters
        ctx.layer = layer
        ctx.save_for_backward(x, w, y)
        return y

    @staticmethod
    def backward(ctx: Any, v: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        layer: BlackBoxLinear = ctx.layer
        x, w, y = ctx.saved_tensors
        v = v.contiguous()
        grad_x = layer._input_gradient(x, v, y) if ctx.needs_input_grad[0] else None
        grad_w = layer._parameter_gradient(x, w, v, y) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None


class BlackBoxLinear(nn.Module):
    """A linear layer computed by a physical device that can only be queried.

    ``y = gain * A(w) x + bias`` for inputs of shape ``(..., d_in)``, like ``nn.Linear``.

    The options come in two groups, each a small dataclass that can also be given field by field
    as keywords (``BlackBoxLinear(64, 64, "mrr", rank=8, samples=20)``):
    :class:`ZOSettings` (``samples``, ``mu``, ``directions``, ``scheme``, ``compressed``,
    ``direction_rank``) and
    :class:`SurrogateSettings` (``rank``, ``sketch``, ``sketch_kind``, ``init``, ``upkeep``,
    ``rebuild_every``, ``ridge``).

    Args:
        d_in: input width.
        d_out: output width.
        device: a physical device name (``'ideal'``, ``'slm'``, ``'mrr'``, ``'mzi'``), a
            :class:`hybridlab.devices.Device` of matching size, or a device served by another
            process (:class:`hybridlab.remote.RemoteDevice`; not with ``oracle``).
        method: one of :data:`METHODS`.
        zo: the zero-order settings (default :class:`ZOSettings`).
        surrogate: the surrogate settings (default :class:`SurrogateSettings`); the rank must
            satisfy ``1 <= r <= min(d_in, d_out)`` for the methods that keep a surrogate.
        bias: learn a digital bias, like ``nn.Linear``.
        gain: initial output gain; ``None`` calibrates it on the first batch so that the
            output has the input's root-mean-square (no extra queries).
        seed: seeds the device (when built from a name), ``w``'s initialisation, the ZO
            directions and the sketches.
        device_options: extra options for :func:`hybridlab.devices.make_device`.
        dtype: floating dtype of the parameters and the device.
        **options: fields of :class:`ZOSettings` and :class:`SurrogateSettings`.

    Attributes:
        batch_gather: ``None``, or a callable that concatenates a tensor of rows from every
            data-parallel rank in rank order (set by :func:`hybridlab.parallel.prepare`); the
            first batch's gain calibration and the ``'forward'`` upkeep then see the whole batch.
    """

    batch_gather: Callable[[Tensor], Tensor] | None = None

    def __init__(
        self,
        d_in: int,
        d_out: int,
        device: str | Device = "ideal",
        *,
        method: str = "surrogate",
        zo: ZOSettings | None = None,
        surrogate: SurrogateSettings | None = None,
        bias: bool = True,
        gain: float | None = None,
        seed: int = 0,
        device_options: dict[str, Any] | None = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        checks.choice(method, "method", METHODS)
        zo = _settings(ZOSettings, zo, options)
        surrogate = _settings(SurrogateSettings, surrogate, options)
        if options:
            valid = [f.name for f in fields(ZOSettings)] + [f.name for f in fields(SurrogateSettings)]
            raise TypeError(f"unknown option(s) {', '.join(sorted(options))}; valid: {', '.join(valid)}")
        dtype = dtype or torch.get_default_dtype()
        if isinstance(device, str):
            device = make_device(device, d_in, d_out, seed=seed, dtype=dtype, **(device_options or {}))
        elif not isinstance(device, Device | RemoteDevice):
            raise TypeError(f"`device` must be a device name, a hybridlab Device or a RemoteDevice, "
                            f"got {type(device).__name__}")
        elif method == "oracle" and isinstance(device, RemoteDevice):
            raise ValueError("method 'oracle' differentiates through the simulator, which a served device keeps "
                             "to itself (it can only be queried): use another method")
        elif device_options:
            raise ValueError("`device_options` only applies when `device` is given by name")
        if (device.d_in, device.d_out) != (d_in, d_out):
            raise ValueError(f"`device` is {device.d_out}x{device.d_in} but the layer is d_out x d_in = {d_out}x{d_in}")
        if method in _SURROGATE_METHODS and not device.linear_in_x:
            raise ValueError(f"method {method!r} needs a device linear in x (a matrix to approximate); "
                             f"{device.name!r} is not: use 'zo_only' or 'oracle'")
        if zo.compressed and not device.linear_in_x:
            raise ValueError(f"`compressed` needs a device linear in x; {device.name!r} is not: use compressed=False")
        if method in _SURROGATE_METHODS:
            check_rank(surrogate.rank, d_out, d_in)
        if method in _METHOD_UPKEEP:  # the aliases: static = upkeep "none", rebuild = upkeep "rebuild"
            if surrogate.upkeep not in ("ksl", _METHOD_UPKEEP[method]):
                raise ValueError(f"method {method!r} is the surrogate method with upkeep {_METHOD_UPKEEP[method]!r}; "
                                 f"got upkeep {surrogate.upkeep!r}: use method='surrogate' with that upkeep")
            surrogate = replace(surrogate, upkeep=_METHOD_UPKEEP[method])
        if surrogate.upkeep == "rebuild" and surrogate.rebuild_every is None:
            surrogate = replace(surrogate, rebuild_every=10)

        self.d_in, self.d_out, self.method, self.seed = d_in, d_out, method, seed
        self.zo, self.surrogate = zo, surrogate
        self.physical = device
        dev = device.device  # the layer lives where its device's buffers live (then moves with .to())
        self._generator = torch.Generator(device=dev).manual_seed(seed)

        self.w = nn.Parameter(device.init_params(torch.Generator().manual_seed(seed + 1)).to(dtype=dtype, device=dev),
                              requires_grad=method != "frozen")
        self.gain = nn.Parameter(torch.tensor(1.0 if gain is None else float(gain), dtype=dtype, device=dev))
        self.bias = nn.Parameter(torch.zeros(d_out, dtype=dtype, device=dev)) if bias else None
        self._gain_calibrated = gain is not None

        # Surrogate A ~ U S V^T of the matrix at parameters w_sur, and the update's query cache.
        r = surrogate.rank if method in _SURROGATE_METHODS else 0
        like = {"dtype": dtype, "device": dev}
        self.register_buffer("U", torch.zeros(d_out, r, **like))
        self.register_buffer("S", torch.zeros(r, r, **like))
        self.register_buffer("V", torch.zeros(d_in, r, **like))
        self.register_buffer("w_sur", torch.full_like(self.w.detach(), float("nan")))
        self.register_buffer("Z", torch.zeros(0, d_in, **like))
        self.register_buffer("F_V", torch.zeros(0, d_out, **like))  # f(V^T; w_sur), cached
        self.register_buffer("F_Z", torch.zeros(0, d_out, **like))  # f(Z; w_sur), cached
        self._fitted = False  # whether w_sur holds a fit (a flag: no read of w_sur per step)
        self.step = 0  # optimizer steps seen (surrogate updates done)
        # Competitors: a nominal digital twin (physics-aware training) and a feedback matrix, drawn
        # here for 'fa' (d_out x d_in) and at the first backward pass for 'dfa', when the width of
        # the network's output is known (n_out x d_in).
        self.twin = make_device(device.name, d_in, d_out, dtype=dtype, device=dev) if method == "twin" else None
        self.register_buffer("B_fb", self._feedback_matrix(d_out) if method == "fa" else torch.zeros(0, d_in, **like))
        self._output_error: Tensor | None = None  # dfa: the gradient of the network's output, set by a hook

    # ------------------------------------------------------------------ public
    @property
    def fitted(self) -> bool:
        """Whether the surrogate has been fitted (done at the first forward pass)."""
        return self._fitted

    def surrogate_matrix(self) -> Tensor:
        """The surrogate ``U S V^T`` (``d_out x d_in``)."""
        return self.U @ self.S @ self.V.T

    @torch.no_grad()
    def sensitivity(self, x: Tensor, delta: float = 1e-2, samples: int = 4) -> float:
        """Relative change of the device's outputs per unit step of every parameter, measured by queries.

        ``kappa = mean_i ||f(X; w + delta u_i) - f(X; w)||_F / (delta ||f(X; w)||_F)`` over ``samples``
        random sign vectors ``u_i`` (the shape of an Adam step, which moves every parameter by about
        its learning rate): a step of ``lr`` in every parameter changes the outputs by about
        ``lr * kappa``. It is a property of the physics at ``w`` (an SLM pixel: about 1; a ring near
        resonance or an MZI phase, which acts on a whole column: 5-15), read from the device like
        everything else.

        A device that does not resolve a step of ``delta`` (phases quantised to a few bits: no output
        moves) is measured again with a ten times larger step, up to one radian.

        Cost: ``samples + 1`` configurations and ``(samples + 1) n`` queries for ``n`` inputs (per step
        size tried). The signs come from a generator of their own (``seed + 3``): the layer's random
        stream is untouched.

        Raises:
            ValueError: no output moves even at a step of one radian (or ``delta``, if larger).
        """
        checks.positive_number(delta, "delta", "the sensitivity's parameter step, e.g. 1e-2")
        samples = checks.count(samples, "samples", what="random sign directions")
        x = x.reshape(-1, self.d_in).to(self.w.dtype)
        self.sync()
        g = torch.Generator(device=self._generator.device).manual_seed(self.seed + 3)
        u = random_rows(samples, self.physical.p, "rademacher", generator=g, dtype=self.w.dtype,
                        torch_device=self.w.device)
        w = self.w.detach()
        step = float(delta)
        while True:
            with self._step_context():
                Y = self.physical.query_batch(torch.cat([w[None], w + step * u]), x)
            kappa = float(((Y[1:] - Y[0]).flatten(1).norm(dim=1) / (step * Y[0].norm().clamp_min(1e-30))).mean())
            if kappa > 0 or step * 10 > max(1.0, delta):
                break
            step *= 10  # the device does not resolve this step (e.g. coarsely quantised phases)
        self.physical.configure(w)
        if not kappa > 0:
            raise ValueError(f"the {self.physical.name} device's outputs do not change when every parameter moves "
                             f"by {step:g}: its sensitivity cannot be measured, so set the device learning rate "
                             "yourself (lr_device, --lr-device)")
        return kappa

    def sync(self) -> None:
        """Configure the device at ``w`` and bring the surrogate up to date (if ``w`` moved)."""
        with self._step_context(), torch.no_grad():
            w = self.w.detach()
            if self.method in _SURROGATE_METHODS:
                if not self.fitted:
                    self._fit(w)
                elif not torch.equal(w, self.w_sur):
                    self.step += 1
                    self.physical.advance()
                    self._update(w)
                    self.w_sur.copy_(w)
            elif not (self._fitted and torch.equal(w, self.w_sur)):
                if self._fitted:
                    self.step += 1
                    self.physical.advance()
                self.w_sur.copy_(w)
                self._fitted = True
            self.physical.configure(w)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"input width {x.shape[-1]} does not match the layer's d_in = {self.d_in} "
                             f"(input shape {tuple(x.shape)})")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.d_in).to(self.w.dtype)
        self.sync()
        if self.method == "oracle":
            with self._step_context():
                y = self.physical.simulate(x2, self.w)
        else:
            y = _BlackBoxFunction.apply(x2, self.w, self)
        if not self._gain_calibrated:  # output rms = input rms, over the whole batch of every rank
            with torch.no_grad():
                xs, ys = self._whole_batch(x2.detach(), y.detach())
                self.gain.copy_(xs.pow(2).mean().sqrt() / ys.pow(2).mean().sqrt().clamp_min(1e-12))
            self._gain_calibrated = True
        out = self.gain * y
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*lead, self.d_out)

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, d_out={self.d_out}, device={self.physical.name!r}, method={self.method!r}, "
                f"rank={self.surrogate.rank}, samples={self.zo.samples}, mu={self.zo.mu:g}, "
                f"sketch={self.surrogate.sketch}")

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self._generator.get_state(), "generator_device": self._generator.device.type,
                "step": self.step, "gain_calibrated": self._gain_calibrated}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_extra_state` (a generator saved on another kind of torch device is reseeded)."""
        rng = state["generator"]
        if state.get("generator_device", "cpu") == self._generator.device.type:
            self._generator.set_state(rng.cpu() if isinstance(rng, Tensor) else rng)
        else:
            self._generator.manual_seed(_seed_from_state(rng))
        self.step = int(state["step"])
        self._gain_calibrated = bool(state["gain_calibrated"])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Cached queries and sketches change size after the first update: adopt the saved sizes.
        for name in ("U", "S", "V", "Z", "F_V", "F_Z", "B_fb"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key]).to(getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._fitted = bool(torch.isfinite(self.w_sur).all())

    def _apply(self, fn, recurse: bool = True):
        # .to()/.cuda(): the generator follows the parameters, reseeded from its own state
        out = super()._apply(fn, recurse)
        if self._generator.device != self.w.device:
            seed = _seed_from_state(self._generator.get_state())
            self._generator = torch.Generator(device=self.w.device).manual_seed(seed)
        return out

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _step_context(self) -> Iterator[None]:
        """Prefix device errors (for example non-finite output) with the training step."""
        try:
            yield
        except ValueError as err:
            if "training step" in str(err):
                raise
            raise ValueError(f"black-box layer ({self.physical.name}), training step {self.step}: {err}") from err

    def _whole_batch(self, *parts: Tensor) -> tuple[Tensor, ...]:
        """Row-aligned ``parts`` of every data-parallel rank, in rank order, in one gather (this rank's
        alone without :attr:`batch_gather`)."""
        if self.batch_gather is None:
            return parts
        return self.batch_gather(torch.cat(parts, dim=1)).split([t.shape[1] for t in parts], dim=1)

    def _query(self, X: Tensor) -> Tensor:
        with self._step_context():
            return self.physical.query(X)

    def _draw_sketch(self) -> Tensor:
        """A fresh sketch ``Z`` (``s x d_in``) for the implicit update."""
        return random_rows(self.surrogate.sketch, self.d_in, self.surrogate.sketch_kind, generator=self._generator,
                           dtype=self.w.dtype, torch_device=self.w.device)

    @timed("upkeep")
    def _fit(self, w: Tensor) -> None:
        """Initial surrogate fit at w (identity probing or randomized range finder)."""
        self.physical.configure(w)
        sur = self.surrogate
        if sur.init == "identity":
            U, S, V = fit_identity(self.physical.query, self.d_in, sur.rank, dtype=w.dtype, torch_device=w.device)
        else:
            U, S, V = fit_randomized(self.physical.query, self.d_in, sur.rank, sketch=sur.sketch,
                                     kind=sur.sketch_kind, generator=self._generator, dtype=w.dtype,
                                     torch_device=w.device)
        self._set_factors(U, S, V)
        self.w_sur.copy_(w)
        self._fitted = True
        if sur.upkeep == "cached":
            self.Z = self._draw_sketch()
            self.F_V = self.physical.query(self.V.T.contiguous())
            self.F_Z = self.physical.query(self.Z)

    def _set_factors(self, U: Tensor, S: Tensor, V: Tensor) -> None:
        self.U, self.S, self.V = U.to(self.w.dtype).contiguous(), S.to(self.w.dtype), V.to(self.w.dtype).contiguous()

    def _rebuild_due(self) -> bool:
        every = self.surrogate.rebuild_every
        return every is not None and self.step % every == 0

    @timed("upkeep")
    def _update(self, w_new: Tensor) -> None:
        """Surrogate update after an optimizer step moved the parameters from w_sur to w_new."""
        if self._rebuild_due():
            self._fit(w_new)
            return
        if self.surrogate.upkeep not in ("ksl", "cached"):  # 'forward' runs in the forward pass
            return
        # Implicit projector-splitting step (chapter 4), from queries only.
        r, V0 = self.surrogate.rank, self.V
        if self.surrogate.upkeep == "cached":
            Z = self.Z
            self.physical.configure(w_new)
            F_new = self.physical.query(torch.cat([V0.T, Z]))
            F_old = torch.cat([self.F_V, self.F_Z])
        else:
            Z = self._draw_sketch()
            probes = torch.cat([V0.T, Z])
            self.physical.configure(self.w_sur)
            F_old = self.physical.query(probes)
            self.physical.configure(w_new)
            F_new = self.physical.query(probes)
        dF = F_new - F_old
        dA_V0, dA_Zt = dF[:r].T, dF[r:].T
        U1, S1, V1 = projector_splitting_step(self.U, self.S, V0, dA_V0, sketched_transpose(Z, dA_Zt))
        self._set_factors(U1, S1, V1)
        if self.surrogate.upkeep == "cached":  # keep f(V1; w_new) and f(Z; w_new) for the next step
            self.F_V = self.physical.query(self.V.T.contiguous())
            self.F_Z = F_new[r:]

    @timed("upkeep")
    def _forward_upkeep(self, X: Tensor, Y: Tensor) -> None:
        """Upkeep ``'forward'``: correct the surrogate with the batch the forward pass just read (every rank's)."""
        X, Y = self._whole_batch(X, Y)
        self._set_factors(*forward_upkeep(self.U, self.S, self.V, X, Y, ridge=self.surrogate.ridge))

    def _twin_gradients(self, x: Tensor, w: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """dL/dx and dL/dw by autograd through the twin's transfer matrix (no device query)."""
        with torch.enable_grad():
            w_ = w.detach().requires_grad_()
            A = self.twin.transfer_matrix(w_)
            grad_w, = torch.autograd.grad((v * (x @ A.T)).sum(), w_)
        return v @ A.detach(), grad_w

    def _feedback_matrix(self, rows: int) -> Tensor:
        """The fixed random feedback matrix (``rows x d_in``, entries ``N(0, 1/d_in)``, seeded by ``seed + 2``)."""
        g = torch.Generator().manual_seed(self.seed + 2)
        B = torch.randn(rows, self.d_in, generator=g, dtype=self.w.dtype) / self.d_in ** 0.5
        return B.to(self.w.device)

    def _direct_feedback(self, v: Tensor) -> Tensor:
        """dfa: ``dL/dx = e B`` with the network's output error ``e`` handed over by :func:`direct_feedback`."""
        e, self._output_error = self._output_error, None  # used once: a stale error must never be reused
        if e is None:
            raise RuntimeError("method 'dfa' needs the network's output error, which the layer cannot see: "
                               "build the model with replace_linear(...) or call "
                               "hybridlab.layer.direct_feedback(model) once before training")
        e = e.reshape(-1, e.shape[-1]).to(v.dtype)
        if e.shape[0] != v.shape[0]:
            raise ValueError(f"method 'dfa': the network's output error has {e.shape[0]} rows but the layer saw "
                             f"{v.shape[0]} input rows; direct feedback needs one output row per layer input row "
                             "(per example, or per token): use method 'fa' for this network")
        if self.B_fb.shape[0] != e.shape[1]:
            self.B_fb = self._feedback_matrix(e.shape[1])
        return e @ self.B_fb

    def _input_gradient(self, x: Tensor, v: Tensor, y: Tensor) -> Tensor:
        """dL/dx: surrogate ``v U S V^T``, or ZO (zo_only), twin (twin) or feedback (fa, dfa)."""
        if self.method == "twin":
            return self._twin_gradients(x, self.w, v)[0]
        if self.method == "fa":
            return v @ self.B_fb
        if self.method == "dfa":
            return self._direct_feedback(v)
        if self.method == "zo_only":
            self.physical.configure(self.w.detach())
            with self._step_context():
                return zo_input_gradient(self.physical.query, x, v, samples=self.zo.samples, mu=self.zo.mu,
                                         kind=self.zo.directions, generator=self._generator, f0=y,
                                         rank=self.zo.direction_rank)
        return ((v @ self.U) @ self.S) @ self.V.T

    def _parameter_gradient(self, x: Tensor, w: Tensor, v: Tensor, y: Tensor) -> Tensor:
        """dL/dw: the zero-order estimate of chapter 3 (twin: autograd through the twin)."""
        if self.method == "twin":
            return self._twin_gradients(x, w, v)[1]
        with self._step_context():
            zo = self.zo
            # (the device checks its own outputs: no second finiteness check here)
            return zo_gradient(self.physical.query_batch, w.detach(), x, v, samples=zo.samples, mu=zo.mu,
                               kind=zo.directions, scheme=zo.scheme, f0=y, compressed=zo.compressed,
                               linear_in_x=self.physical.linear_in_x, generator=self._generator,
                               rank=zo.direction_rank, shape=self.physical.param_shape, check_finite=False)


def _seed_from_state(state: Tensor) -> int:
    """A deterministic 63-bit seed from a generator's state (to reseed it on another torch device)."""
    digest = hashlib.blake2b(bytes(torch.as_tensor(state, dtype=torch.uint8).cpu().tolist()), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def direct_feedback(model: nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Hand the gradient of ``model``'s output to its ``dfa`` black boxes during every backward pass.

    Registers a forward hook on ``model`` (once; a second call returns the same handle). At every
    forward pass with autograd on, the hook puts a tensor hook on the output; backpropagation
    reaches the output before any layer, so each ``dfa`` layer holds the output error ``e`` when its
    own backward runs, and computes ``dL/dx = e B``. The output must be one tensor whose rows (all
    dimensions but the last) match the layer's input rows. :func:`replace_linear` calls this for a
    ``dfa`` layer; call it yourself when you build a :class:`BlackBoxLinear` by hand.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module (the whole network), got {type(model).__name__}")
    handle = getattr(model, "_direct_feedback_handle", None)
    if handle is not None:
        return handle

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not torch.is_grad_enabled():
            return
        layers = [m for m in module.modules() if isinstance(m, BlackBoxLinear) and m.method == "dfa"]
        if not layers:
            return
        if not isinstance(output, Tensor):
            raise TypeError(f"direct feedback alignment needs the model's output to be one tensor (the output "
                            f"error is projected back from it), got {type(output).__name__}: use method 'fa'")
        if not output.requires_grad:
            return

        def keep(grad: Tensor) -> None:
            for layer in layers:
                layer._output_error = grad.detach()

        output.register_hook(keep)

    handle = model.register_forward_hook(hook)
    model._direct_feedback_handle = handle
    return handle


def replace_linear(model: nn.Module, name: str, device: str | Device = "ideal", **options: Any) -> BlackBoxLinear:
    """Replace the ``nn.Linear`` called ``name`` (dotted path) in ``model`` by a :class:`BlackBoxLinear`.

    The new layer has the Linear's sizes and bias setting; ``options`` go to
    :class:`BlackBoxLinear`. Returns the new layer (already in place). For ``method="dfa"`` the
    model also gets the hook of :func:`direct_feedback`.
    """
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        old = model.get_submodule(name)
    except AttributeError:
        old = None
    if not isinstance(old, nn.Linear):
        raise ValueError(f"`name` {name!r} is not an nn.Linear of the model; "
                         f"Linear layers: {', '.join(linears) or 'none'}")
    options.setdefault("bias", old.bias is not None)
    options.setdefault("dtype", old.weight.dtype)
    new = BlackBoxLinear(old.in_features, old.out_features, device, **options).to(old.weight.device)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    if new.method == "dfa":
        direct_feedback(model)
    return new
