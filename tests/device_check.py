"""Finding, on a CPU, what breaks only on a GPU: tensors left on the host beside the run's device tensors.

On a GPU, `torch.arange(T)` in a forward, a test set passed to the model without `.to(device)`, a table a module
keeps outside its buffers or a CPU generator drawing into a device tensor all fail at the first operation that
mixes devices, and `.numpy()` of a device tensor fails outright. On the CPU the same code runs, because the host
and the run's device are one device. `DeviceTags` tells them apart: a TorchFunctionMode that follows every
tensor's device *of intent* while a run (`zupu train`, `zupu eval`) goes on:

- on the device: a module's parameters and buffers once `Module.to` moves it (`launch` moves the run's model), and
  whatever an operation computes from a device tensor; they leave with `Module.cpu()`;
- on either: what a factory makes with `device=` and what `x.to(device)` returns (`torch.arange(T, device=x.device)`
  and `batch.to(of(model))` are right wherever x or the model is), and what is computed from such tensors alone;
- on the host: everything else, i.e. what factories make without `device=` (`torch.zeros/arange/randn/tensor/
  from_numpy...`), what `.cpu()` returns, tensors made before the run or read from files, and anything a CPU
  generator draws (it draws on the CPU whatever `device=` says; on CUDA a CPU generator is refused);

and raises where CUDA would: an operation that meets a host tensor (zero-dimensional ones excepted: CUDA accepts CPU
scalars) and a device tensor, a CPU generator used on device tensors, and `.numpy()` of a device tensor in zupu's
code. A device tensor may be indexed by host indices and copied to or from the host, as on CUDA.

The first version of this check (torch.set_default_device("meta") inside forwards and steps) found only factories
inside those scopes: not a batch that was never moved, a CPU generator, or `.numpy()`. This one needs no scopes.
What it cannot tell apart: `x.to("cpu")` meant as "the host" passes as a move to the model (write `.cpu()`); a
factory's explicit `device="cpu"` likewise; tensors made in other threads are not followed (the Trainer's thread
workers).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils.weak import WeakIdKeyDictionary

FACTORIES = set(_device_constructors()) | {torch.from_numpy, torch.frombuffer}
Tensor = torch.Tensor
_TO_HOST_NUMPY = {Tensor.numpy, Tensor.__array__}
_MAY_MIX = {Tensor.copy_, Tensor.to, Tensor.type_as, Tensor.new_tensor, torch._has_compatible_shallow_copy_type}


class HostDeviceMix(RuntimeError):
    """Code that works on the CPU would fail on a GPU: it mixes host and device tensors."""


def _tensors(args: tuple, kwargs: dict) -> list[Tensor]:
    out = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, Tensor))
    return out


def _moves(args: tuple, kwargs: dict) -> bool:
    """Whether a `Tensor.to` call names a device (or a tensor whose device it takes), not only a dtype."""
    return "device" in kwargs or any(isinstance(a, (torch.device, str, Tensor)) for a in args[1:])


def _caller() -> str:
    """file:line of the first frame outside torch and this file."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename == __file__ or "/torch/" in frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return "?"
    path = frame.f_code.co_filename
    return f"{path[path.find('zupu/'):] if 'zupu/' in path else path}:{frame.f_lineno}"


def _moving_a_module() -> bool:
    """Whether this `.to` is Module.to's, on a module's parameters and buffers (its `convert` in module.py)."""
    frame = sys._getframe(2)
    return frame.f_code.co_name == "convert" and frame.f_code.co_filename.endswith("torch/nn/modules/module.py")


def _setting(func: Any, attribute: str) -> bool:
    """Whether `func` assigns the tensor attribute `attribute` (`t.data = u` calls the descriptor's __set__)."""
    return _name(func) == "__set__" and getattr(getattr(func, "__self__", None), "__name__", None) == attribute


def _name(func: Any) -> str:
    return getattr(func, "__name__", None) or repr(func)


class DeviceTags(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.on_device = WeakIdKeyDictionary()
        # made with an explicit `device=` (`torch.arange(T, device=x.device)`): right wherever x is, so it takes the
        # side of what it meets, as does what is computed from such tensors alone
        self.either = WeakIdKeyDictionary()
        self.born = WeakIdKeyDictionary()  # host tensor -> "torch.arange at file:line" of the factory it came from

    def _origin(self, host: list[Tensor]) -> str:
        return next((f" (from {self.born[t]})" for t in host if t in self.born), "")

    def _tag(self, out: Any, inputs: list[Tensor], tags: WeakIdKeyDictionary | None = None) -> None:
        tags = self.on_device if tags is None else tags
        for t in (out if isinstance(out, (list, tuple)) else (out,)):
            if isinstance(t, Tensor) and not any(t is i for i in inputs):
                tags[t] = True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = _tensors(args, kwargs)
        if getattr(func, "_qualified_op_name", "").startswith("mkldnn::"):
            # CPU-only kernels, taken only when the input is on the CPU (zupu.nn.linear's packed weights, a cache
            # kept beside the parameters): never with a GPU's tensors, so judged by the input alone
            tensors = tensors[:1]
        device = [t for t in tensors if t in self.on_device]
        host = [t for t in tensors if t not in self.on_device and t not in self.either and t.dim() > 0]
        generator = kwargs.get("generator")
        cpu_generator = isinstance(generator, torch.Generator) and generator.device.type == "cpu"
        if device:
            if func in _TO_HOST_NUMPY and sys._getframe(1).f_globals.get("__name__", "").startswith("zupu"):
                raise HostDeviceMix(f"{_name(func)} of a device tensor {tuple(device[0].shape)}: on a GPU this "
                                    "fails; take .cpu() first")
            if cpu_generator:
                raise HostDeviceMix(f"{_name(func)} with a CPU generator on a device tensor "
                                    f"{tuple(device[0].shape)}: on a GPU this fails; draw on the generator's device "
                                    "and move the result")
            if host and not self._may_mix(func, args):
                raise HostDeviceMix(f"{_name(func)} meets a host tensor {tuple(host[0].shape)}{self._origin(host)} "
                                    f"and a device tensor "
                                    f"{tuple(device[0].shape)}: on a GPU this fails (tensors on two devices); "
                                    "make the host one on the device (device=..., .to(device))")
        out = func(*args, **kwargs)
        if _setting(func, "data") and isinstance(args[1], Tensor):  # `t.data = u`: t is now where u is
            for tags in (self.on_device, self.either):
                if args[1] in tags:
                    tags[args[0]] = True
                else:
                    tags.pop(args[0], None)
        elif func in (Tensor.to, Tensor.cuda) and (func is Tensor.cuda or _moves(args, kwargs)):
            src = args[0]
            if _moving_a_module():  # Module.to: the run's model (and any module moved beside it) goes to the device
                if isinstance(src, nn.Parameter):  # moved in place
                    self.on_device[src] = True
                    return out
                if out is src:  # the same object on the CPU: a new one for the device
                    out = out.view_as(out)
                self.on_device[out] = True
            else:  # `x.to(of(model))`: right wherever the model is, so on either side
                if out is src and src not in self.either:
                    out = out.view_as(out)
                self.on_device.pop(out, None)
                self.either[out] = True
        elif func is Tensor.cpu:
            src = args[0]
            if isinstance(src, nn.Parameter):  # Module.cpu
                self.on_device.pop(src, None)
            elif out is src and src in self.on_device:
                out = out.view_as(out)
        elif func is Tensor.__getitem__ and isinstance(out, Tensor):  # indexing gives what was indexed, whatever
            for tags in (self.on_device, self.either):  # the indices (host indices into a device tensor are fine)
                if args[0] in tags and out is not args[0]:
                    tags[out] = True
        elif device and not cpu_generator:
            self._tag(out, tensors)
        elif not cpu_generator and ((not tensors and func in FACTORIES and kwargs.get("device") is not None)
                                    or (tensors and not host and any(t in self.either for t in tensors))):
            self._tag(out, tensors, self.either)
        elif isinstance(out, Tensor) and not any(out is t for t in tensors):
            if not tensors and func in FACTORIES:
                self.born[out] = f"torch.{_name(func)} at {_caller()}"
            elif host:
                origin = next((self.born[t] for t in host if t in self.born), None)
                if origin is not None:
                    self.born[out] = origin
        return out

    def _may_mix(self, func: Any, args: tuple) -> bool:
        """What CUDA allows across devices: copies and moves, host indices into a device tensor, and assigning
        `.data` / `.grad` (Module.to / .cpu do; the assignment computes nothing)."""
        if _name(func) == "__set__":
            return True
        if func in _MAY_MIX:
            return True
        if func is Tensor.__getitem__:
            return args[0] in self.on_device
        if func is Tensor.__setitem__:
            value = args[2] if len(args) > 2 else None
            return args[0] in self.on_device and not (isinstance(value, Tensor) and value.dim() > 0
                                                      and value not in self.on_device)
        return False


def host_tensors_held(model: nn.Module) -> list[str]:
    """Tensors a module keeps as plain attributes: `model.to(device)` leaves them on the host."""
    return [f"{name or type(model).__name__}.{attr}" for name, m in model.named_modules()
            for attr, value in vars(m).items() if torch.is_tensor(value) and not isinstance(value, nn.Parameter)]
