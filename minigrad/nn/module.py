"""Parameter and Module: the tree of layers, its state, and the forward/backward contract.

A layer subclasses ``Module`` and writes two methods::

    def forward(self, x):            # self.save_for_backward(x=x, ...): what backward needs, named; returns y
    def backward(self, grad_output): # reads self.saved.x; adds dL/dparam into param.grad, returns dL/dx

One convention for what forward keeps: ``save_for_backward(name=array, ...)`` stores it in ``self.saved``
(read as ``self.saved.x``); the base class lets it go when backward is done, since a forward is
backpropagated once (PyTorch's ``ctx.save_for_backward`` / Chainer's retained inputs).

``Module`` takes care of the rest: ``y = m(x)`` calls ``forward``; ``m.backward(g)`` is checked before the
layer's own code runs (forward happened, one backward per forward, ``g`` has the output's shape), and
optionally records statistics of ``g`` and of the output for gradient-flow plots (``grad_stats``).

An empty batch (an input with no elements) is handled here once for every layer, as PyTorch does: the
layer's forward returns its empty output, and backward returns zeros of the input's shape without running
the layer's own backward, so nothing is added to any parameter gradient.
"""
import functools
from collections import OrderedDict

import numpy as np

from ..grad_stats import activation_stats, grad_output_stats, tensor_stats

__all__ = ["Parameter", "Module", "Saved"]


class Parameter:
    """A learnable array ``data`` and its gradient ``grad`` (same shape and dtype, zeros at first).

    Backward passes add into ``grad`` (``+=``); ``zero_grad()`` clears it in place. With
    ``requires_grad=False`` (as PyTorch's; ``Module.requires_grad_(False)`` for a whole model) backward
    leaves ``grad`` alone and skips that gradient's work: for measurements that need only the gradients
    with respect to inputs and outputs (the gradient-scale study), a third of a Linear's backward.
    """

    def __init__(self, data, dtype=None, requires_grad=True):
        data = np.array(data, dtype=dtype if dtype is not None else None, copy=True)
        if not np.issubdtype(data.dtype, np.floating):
            data = data.astype(np.float32)
        self.data = data
        self.grad = np.zeros_like(data)
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def zero_grad(self):
        self.grad[...] = 0

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _checked_backward(backward):
    """Wrap a layer's ``backward`` with the contract checks and grad-output recording."""

    @functools.wraps(backward)
    def checked(self, grad_output):
        if self._backward_depth:  # a subclass's backward calling super().backward: already checked
            return backward(self, grad_output)
        name = self._display_name()
        if self._forward_state is None:
            raise RuntimeError(f"{name}.backward() was called before forward()")
        if self._forward_state == "used":
            raise RuntimeError(
                f"{name}.backward() was called twice for the same forward(); that would add the "
                "parameter gradients twice. Run forward() again first."
            )
        grad_output = np.asarray(grad_output)
        if grad_output.shape != self._output_shape:
            raise ValueError(
                f"{name}.backward(): grad_output must have the shape of the last output "
                f"{self._output_shape}, got {grad_output.shape}"
            )
        if not np.issubdtype(grad_output.dtype, np.floating):
            raise TypeError(f"{name}.backward(): grad_output must be floating point, got {grad_output.dtype}")
        if self._empty_input is not None:
            return self._empty_backward(grad_output)
        if self.record_grad_output:
            self._grad_output_stats = grad_output_stats(grad_output)
        self._forward_state = "used"
        self._backward_depth += 1
        try:
            return backward(self, grad_output)
        finally:
            self._backward_depth -= 1
            object.__setattr__(self, "saved", None)  # one backward per forward: what it kept is no longer needed

    checked._is_checked = True
    return checked


def positive_int(layer, name, value):
    """``value`` as an int >= 1 (NumPy integers too), else ValueError naming the layer and the argument.

    A bool is refused although Python counts it as an int (``Linear(4, True)`` would be ``Linear(4, 1)``),
    and so are floats and strings: the rule of Conv2d's channel counts, for every layer's sizes.
    """
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


class Saved:
    """What a layer's forward keeps for its backward, by name (``self.saved.x``); see ``save_for_backward``."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __repr__(self):
        return f"Saved({', '.join(self.__dict__)})"


class Module:
    """Base class of every layer and model, as ``torch.nn.Module``.

    Attributes that are ``Parameter`` or ``Module`` instances are registered in assignment order,
    which is forward order for the models of this library; dotted names (``stage0.block0.conv0.weight``)
    come from that tree. Buffers (running statistics) are registered with ``register_buffer``.
    """

    record_grad_output = False
    record_activations = False

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_state", None)
        object.__setattr__(self, "_output_shape", None)
        object.__setattr__(self, "_backward_depth", 0)
        object.__setattr__(self, "_grad_output_stats", None)
        object.__setattr__(self, "_activation_stats", None)
        object.__setattr__(self, "_name", None)
        object.__setattr__(self, "saved", None)
        object.__setattr__(self, "_empty_input", None)  # (shape, dtype) of the last input when it was empty

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        backward = cls.__dict__.get("backward")
        if getattr(cls, "_is_loss", False):  # losses check their own backward(), which takes no argument
            return
        if backward is not None and not getattr(backward, "_is_checked", False):
            cls.backward = _checked_backward(backward)

    # ----------------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        # As PyTorch: a replaced parameter or child keeps its place in the order, and a new array
        # assigned to a registered buffer stays a buffer (it would otherwise vanish from state_dict).
        if isinstance(value, Parameter):
            keep = self._parameters
        elif isinstance(value, Module):
            keep = self._modules
        else:
            keep = self._buffers if name in self._buffers else None
        for registry in (self._parameters, self._modules, self._buffers):
            if registry is not keep:
                registry.pop(name, None)
        if keep is self._parameters or keep is self._modules:
            keep[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name, array):
        """Register a non-learnable array (e.g. ``running_mean``) saved in ``state_dict``."""
        self._buffers[name] = None
        object.__setattr__(self, name, array)

    def register_parameter(self, name, param):
        """Register ``param`` (a ``Parameter`` or None, e.g. ``bias=False``) under ``name``."""
        if param is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, param)

    # ----------------------------------------------------------------- forward / backward
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def save_for_backward(self, **values):
        """Keep what backward needs, by name: ``self.save_for_backward(x=x)`` then ``self.saved.x``.

        The arrays are kept by reference, not copied (a layer never modifies its input in place); the
        base class drops them once backward has run.
        """
        object.__setattr__(self, "saved", Saved(**values))

    def __call__(self, x):
        y = self.forward(x)
        self._forward_state = "ready"
        self._output_shape = np.shape(y)
        empty = np.size(x) == 0
        object.__setattr__(self, "_empty_input",
                           (np.shape(x), np.result_type(np.asarray(x).dtype, np.asarray(y).dtype)) if empty else None)
        if self.record_activations and not empty:
            self._activation_stats = activation_stats(y)
        return y

    def _empty_backward(self, grad_output):
        """Backward of an empty batch, for every layer alike (as PyTorch): nothing to add to any parameter
        gradient, and zeros of the input's shape. The layer's own backward (and its children's) never runs."""
        shape, dtype = self._empty_input
        for module in self.modules():  # forward ran on empty arrays all the way down: one backward for all
            module._forward_state = "used"
            object.__setattr__(module, "saved", None)
        return np.zeros(shape, np.result_type(dtype, grad_output.dtype))

    def _display_name(self):
        return f"{type(self).__name__}({self._name})" if self._name else type(self).__name__

    def _check_input(self, x, ndim=None, channels=None, channel_axis=1, name="input"):
        """Check ``x`` is a floating ndarray with ``ndim`` dims and ``channels`` on ``channel_axis``.

        Returns ``x`` as an ndarray. Integer or bool input is a TypeError: silently casting labels or
        masks into a layer is a common, invisible mistake.
        """
        x = np.asarray(x)
        layer = self._display_name()
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{layer}: {name} must be a floating-point array, got dtype {x.dtype}")
        if ndim is not None:
            allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
            if x.ndim not in allowed:
                expected = " or ".join(str(d) for d in allowed)
                raise ValueError(f"{layer}: {name} must have {expected} dimensions, got shape {x.shape}")
        if channels is not None and x.shape[channel_axis] != channels:
            raise ValueError(
                f"{layer}: {name} must have {channels} channels/features on axis {channel_axis}, "
                f"got shape {x.shape}"
            )
        return x

    def _compute_dtype(self, x):
        """The dtype a layer computes in: ``np.result_type`` of the input and the parameters."""
        params = [p.data for p in self._parameters.values() if p is not None]
        return np.result_type(x, *params) if params else x.dtype

    # ----------------------------------------------------------------- tree walks
    def children(self):
        return iter(self._modules.values())

    def named_children(self):
        return iter(self._modules.items())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if param is not None:
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self):
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name in module._buffers:
                yield (f"{module_name}.{name}" if module_name else name), getattr(module, name)

    def apply(self, fn):
        for module in self.modules():
            fn(module)
        return self

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    def name_modules(self):
        """Give every submodule its dotted name, used in error messages (``VGG.stage0.block0.conv0``)."""
        for name, module in self.named_modules():
            if name:
                module._name = name
        return self

    # ----------------------------------------------------------------- modes, dtype, grads
    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for param in self.parameters():
            param.zero_grad()

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` of every parameter (False: backward computes no parameter gradient); returns self."""
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
        return self

    def to(self, dtype):
        """Cast parameters, their gradients and floating buffers to ``dtype`` in place; returns self."""
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"{type(self).__name__}.to(): dtype must be floating point, got {dtype}")
        for param in self.parameters():
            param.data = param.data.astype(dtype)
            param.grad = param.grad.astype(dtype)
        for module in self.modules():
            for name in module._buffers:
                value = getattr(module, name)
                if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
                    object.__setattr__(module, name, value.astype(dtype))
        return self

    def double(self):
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    # ----------------------------------------------------------------- state
    def state_dict(self):
        """Copies of every parameter and buffer by dotted name (PyTorch's keys)."""
        state = OrderedDict()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if param is not None:
                    state[prefix + name] = param.data.copy()
            for name in module._buffers:
                value = getattr(module, name)
                if value is not None:
                    state[prefix + name] = np.array(value, copy=True)
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from ``state_dict`` into parameters and buffers: all of them, or none.

        Every entry is checked before anything is assigned: its name (``strict``: no key missing, none
        unexpected), its shape, and its dtype, which must cast to the target's as NumPy's "same_kind" rule
        allows (float64 into float32, integers into floats, int32 into an int64 buffer; never strings,
        objects such as ``None``, complex numbers, or floats into an integer buffer). An error names the key,
        and the module is left as it was. Parameters are written in place; buffers get copies in their dtype.
        """
        name = type(self).__name__
        own = OrderedDict()  # key -> (module, attribute, is_parameter), in state_dict order
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for attribute, param in module._parameters.items():
                if param is not None:
                    own[prefix + attribute] = (module, attribute, True)
            for attribute in module._buffers:
                if getattr(module, attribute) is not None:  # as state_dict: a None buffer has no entry
                    own[prefix + attribute] = (module, attribute, False)
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"{name}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        checked = []
        for key, (module, attribute, is_parameter) in own.items():
            if key not in state_dict:
                continue
            current = getattr(module, attribute)
            current = current.data if is_parameter else current
            new = np.asarray(state_dict[key])
            if new.dtype.kind not in "biuf":
                raise TypeError(f"{name}.load_state_dict: {key} must hold numbers, got an array of dtype "
                                f"{new.dtype}")
            if isinstance(current, np.ndarray):
                if not np.can_cast(new.dtype, current.dtype, casting="same_kind"):
                    raise TypeError(f"{name}.load_state_dict: {key} has dtype {new.dtype}, which does not cast "
                                    f"to its {current.dtype}")
                if new.shape != current.shape:
                    raise ValueError(f"{name}.load_state_dict: {key} has shape {new.shape}, expected {current.shape}")
            checked.append((module, attribute, is_parameter, current, new))
        for module, attribute, is_parameter, current, new in checked:  # every entry is valid: assign them all
            if is_parameter:
                current[...] = new
            else:
                value = new.astype(current.dtype) if isinstance(current, np.ndarray) else np.array(new, copy=True)
                object.__setattr__(module, attribute, value)
        return self

    # ----------------------------------------------------------------- statistics
    @property
    def grad_stats(self):
        """Gradient statistics by dotted name, in forward (registration) order.

        ``"<name>.weight"``: ``tensor_stats`` of that parameter's ``.grad`` (mean_abs, l2, var, max_abs,
        numel). With ``record_grad_output`` set on a module, ``"<name>:grad_output"`` holds the statistics
        of d loss / d output of its last backward (plus ``batch_var``); with ``record_activations``,
        ``"<name>:activations"`` holds the output's std and sign diversity.
        """
        stats = OrderedDict()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if param is not None:
                    stats[prefix + name] = tensor_stats(param.grad)
            label = module_name or type(module).__name__
            if module.record_grad_output and module._grad_output_stats is not None:
                stats[f"{label}:grad_output"] = dict(module._grad_output_stats)
            if module.record_activations and module._activation_stats is not None:
                stats[f"{label}:activations"] = dict(module._activation_stats)
        return stats

    # ----------------------------------------------------------------- repr
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"
