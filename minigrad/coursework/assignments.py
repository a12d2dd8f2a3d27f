"""The assignments: which function bodies a handout removes, what the handout says, and the graded items.

An ``Item`` is one graded unit: the bodies it removes, the check that grades it (a key of
``checks.CHECKS``) and its points. Each formula lives in one place in the library, so an item removes the
method the student writes (``"minigrad.nn.linear:Linear.backward"``) and, where that method hands the
arithmetic to a Numba kernel, the kernel functions holding the formula (a glob, ``"..._relu_backward*"``):
never a second copy of the formula. An ``Assignment`` is a list of items
and the Markdown text of its handout: the maths to use and the experiment to run once everything works.
"""
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Item", "Assignment", "ASSIGNMENTS", "get_assignment"]


def _path(target):
    """``"minigrad.nn.linear:Linear.backward"`` -> ``"minigrad/nn/linear.py"``."""
    return str(Path(*target.partition(":")[0].split(".")).with_suffix(".py"))


@dataclass(frozen=True)
class Item:
    name: str        # shown in reports and in Gradescope: "Linear.backward"
    check: str       # key of checks.CHECKS
    removes: tuple   # "package.module:Qualified.name" of every body the handout removes for this item
    points: int = 10

    def files(self):
        """The files (relative paths) a student edits for this item, the main one first."""
        return list(dict.fromkeys(_path(t) for t in self.removes))


@dataclass(frozen=True)
class Assignment:
    name: str
    title: str
    items: tuple
    text: str        # Markdown: the maths, the self-check and the experiment (after the item table)

    @property
    def max_score(self):
        return sum(item.points for item in self.items)

    def stub_message(self, qualname):
        """The message of the ``NotImplementedError`` that replaces a removed body."""
        return f"coursework '{self.name}': implement {qualname} (see HANDOUT.md)"

    def handout_markdown(self):
        rows = []
        for item in self.items:
            main, *helpers = item.removes
            also = "".join(f"; also stubbed: `{h.split(':')[1]}` in `{_path(h)}`" for h in helpers)
            rows.append(f"| {item.name} | `{main.split(':')[1]}` in `{_path(main)}`{also} | {item.points} |")
        table = "\n".join(["| Item | What to write | Points |", "|---|---|---|"] + rows)
        return (f"# Coursework: {self.title}\n\n"
                "This folder is the whole minigrad library with a few function bodies removed. Each removed "
                "body now raises `NotImplementedError`; its signature and docstring are unchanged, and the "
                "docstrings (of the function and of its class) state the formulas. Everything else is the "
                "library itself, so once your code is right this package trains exactly like minigrad.\n\n"
                "Install it in a fresh environment with `pip install -e .` (or run from this folder).\n\n"
                f"## What to implement ({self.max_score} points)\n\n{table}\n\n"
                "You may add helper functions, but keep every signature, and do not change other files: the "
                "grader uses the rest of the library as given."
                + (" The functions marked *also stubbed* (a `*` stands for any name) are the Numba kernels "
                   "that the method calls to do its arithmetic fast; they are not graded, and kernels are "
                   "optional: write the formula in the method itself, in NumPy, if you prefer (other layers "
                   "that share the kernel, such as LayerNorm with BatchNorm's, then wait for it or for "
                   "yours)." if any(len(item.removes) > 1 for item in self.items) else "") + "\n\n"
                f"{self.text.strip()}\n\n"
                "## How you are graded\n\n"
                "Each item is run in its own process with a time and memory limit, on hidden random cases "
                "(float64, random and non-square shapes, random upstream gradients, train and eval mode). Your "
                "gradients are compared with finite differences and with the library's own backward; a case "
                "passes when both agree to about 1e-6 relative error, and an item scores its share of passed "
                "cases. An exception, a wrong shape, a NaN or a time-out costs only that item. Modifying an "
                "input or `grad_output` in place fails the case.\n")


_GRADCHECK = """\
## Check your work yourself

`minigrad.gradcheck` compares a backward with central finite differences in float64 (random upstream
gradient, random directions); use it on small, non-square shapes and in train and eval mode:

```python
import numpy as np
from minigrad import nn, gradcheck
{examples}
```

Each call prints `gradcheck passed` or `FAILED` with the worst relative error and where it is.
"""

MLP_TEXT = """
## The maths

For a layer `y = f(x)` and the gradient `g = dL/dy` that `backward(grad_output)` receives, backward must
**add** `dL/dparam` into each `param.grad` (`+=`, never `=`) and **return** `dL/dx`, the shape of `x`.

- **Linear**, `y = x W^T + b` over the last axis (any leading axes: flatten them to rows first):
  `dW = g^T x`, `db = sum of g over the rows`, `dx = g W`. `W` is `(out_features, in_features)`; the
  forward keeps its input with `self.save_for_backward(x=x)`, read back as `self.saved.x`.
- **ReLU**, `y = max(x, 0)`: `dx = g * [y > 0]` (the derivative at 0 is taken as 0); the forward keeps
  its output, `self.saved.y`.
- **LeakyReLU** with slope `a`: `dx = g` where `x > 0`, `a * g` elsewhere. The forward keeps what you
  need as `self.saved.sign_source`.
- **CrossEntropyLoss** with `p = softmax(logits)` and one-hot targets `t`: `dL/dlogits = (p - t) / N` for
  `reduction="mean"` (N = batch size), `p - t` for `"sum"`. `backward()` takes no argument (the base
  class checks it follows a forward, once); the forward keeps `self.saved.softmax` and
  `self.saved.target`.
- **Adam** (`Adam._step_group(group)`, called by `Optimizer.step()` for each parameter group), exactly as
  PyTorch, for every parameter with gradient `g` at step `t = 1, 2, ...` (keep `m`, `v`, `t` in
  `self.state[p]`): `g <- g + weight_decay * p` (Adam) or `p <- p * (1 - lr * weight_decay)` (AdamW,
  `self._decoupled_weight_decay`); `m <- beta1 m + (1 - beta1) g`; `v <- beta2 v + (1 - beta2) g^2`
  (amsgrad: use the running maximum of `v`); `p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`.
  Note where `eps` goes: after the bias correction. Do not modify `p.grad`.

{gradcheck}
For the loss: `gradcheck(nn.CrossEntropyLoss(), (4, 7), target=np.array([0, 6, 2, 2]))`. For Adam, compare
a few steps with the formula above by hand on a 2-element parameter.

## The experiment: an MLP on CIFAR-10

Once every item passes, train a small MLP (the data is looked up in `--data-dir`, `$MINIGRAD_DATA`,
`data/` in the package's folder or `../shared/data/` beside it; `load_cifar("cifar10", download=True)` downloads it):

```python
import numpy as np
import minigrad
from minigrad import nn, optim
from minigrad.data import BatchLoader, load_cifar, prepare_cifar

minigrad.manual_seed(0)
splits = prepare_cifar(load_cifar("cifar10"), train_subset=20000)
train = BatchLoader(splits.train_images, splits.train_labels, 100, shuffle=True, mean=splits.mean, std=splits.std)
val = BatchLoader(splits.val_images, splits.val_labels, 500, mean=splits.mean, std=splits.std)
model = nn.Sequential(nn.Linear(3072, 256), nn.ReLU(), nn.Linear(256, 256), nn.LeakyReLU(0.01), nn.Linear(256, 10))
crit, opt, rng = nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), np.random.default_rng(0)
for epoch in range(10):
    model.train()
    for x, y in train.epoch(rng):
        opt.zero_grad()
        loss = crit(model(x.reshape(len(x), -1)), y)
        model.backward(crit.backward())
        opt.step()
    model.eval()
    correct = sum(int((model(x.reshape(len(x), -1)).argmax(1) == y).sum()) for x, y in val.epoch())
    print(f"epoch {epoch}: train loss {loss:.3f}, val acc {correct / len(splits.val_labels):.3f}")
```

Report the validation accuracy per epoch (expect roughly 45-50% after 10 epochs), then compare ReLU with
LeakyReLU, and Adam with `optim.SGD(model.parameters(), lr=0.01, momentum=0.9)`.
"""

CONV_TEXT = """
## The maths

`backward(grad_output)` adds into `param.grad` and returns `dL/dx`; `g` below is `grad_output`.

- **Conv2d** (`minigrad/nn/conv.py`; the index shuffling `im2col`, `col2im`, `nchw_to_rows`, `rows_to_nchw`
  in `minigrad/kernels/im2col.py` is given, with its index mapping in the docstring). With
  `cols = im2col(x)` of shape `(C_in*kh*kw, N*H_out*W_out)`, `W_mat = weight.reshape(C_out, -1)` and `dY`
  the gradient as `(C_out, N*H_out*W_out)`: `dW = dY cols^T`, `db = sum of g over (n, h, w)`,
  `dx = col2im(W_mat^T dY)`. The forward keeps what backward needs (see `Conv2d.forward`).
  Test non-square kernels, strides and paddings: a row index computed with the kernel height where the
  width belongs only fails there.
- **BatchNorm2d** (`_BatchNorm.backward` in `minigrad/nn/batchnorm.py`), per channel over `(N, H, W)` with
  `n` values, `xhat = (x - mu) * invstd`: `dgamma = sum g * xhat`, `dbeta = sum g`; with batch statistics
  (training, or `track_running_stats=False`) `dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat))`;
  with running statistics (eval) the layer is affine: `dx = gamma * invstd * g`. The forward keeps
  `self.saved.x3` (the input as `(N, C, H*W)`), `self.saved.mean`, `self.saved.invstd` (per channel) and
  `self.saved.used_batch_stats`. Without `affine` there is no `weight`/`bias` (take gamma = 1). LayerNorm
  runs the same kernels on its rows, so it works again once yours does.
- **AvgPool2d** (`minigrad/nn/pooling.py`): each output is its window's sum divided by `d`, so each real
  (not padding) input pixel receives `g[n, c, h, w] / d` from every window `(h, w)` that contains it;
  windows overlap when stride < kernel. The geometry is `self.kernel_hw` (kh, kw), `self.stride_hw`
  (sh, sw) and `self.padding_hw` (ph, pw); the window of output row `h` spans input rows
  `h*sh - ph ... h*sh - ph + kh - 1` (clipped to the image), and `d` (which depends on
  `count_include_pad`, `ceil_mode` and `divisor_override`) is given by `avg_pool_divisor(h, w, kh, kw, sh,
  sw, ph, pw, H, W, count_include_pad, divisor_override)` in `minigrad/kernels/pooling.py`, callable from
  Python (`divisor_override` as an int, 0 for none). The forward keeps `self.saved.input_shape` and
  `self.saved.dtype`.

{gradcheck}
## The experiment: VGG08 against VGG38

Once every item passes, run the coursework's depth experiment (CIFAR-10, a training subset, a few
epochs; about 15 minutes on 2 cores):

```bash
python -m experiments.vgg_depth --out results/vgg_depth
```

It trains VGG08, VGG38 and VGG38 with BN and residual connections, and writes `results.md` and the figures
`training_curves.png`, `grad_flow_first.png`. Explain why VGG38 stays at chance while VGG08 learns, using
the gradient-flow figure (mean |dL/dW| per layer, from the input).
"""

DEPTH_TEXT = """
## The maths and the structure

Every residual connection in the library is an `nn.Residual` (`minigrad/nn/residual.py`):
`y = act(branch(x) + shortcut(x))`, where the branch is the layers it was given (its own children, named
`self.branch_names`, in `self.branch`), `self.shortcut` is a module or `None` (the identity, `+ x`) and
`self.act` an activation after the sum or `None`. The VGG blocks (LeakyReLU after the sum) and the
ResNet study's pre-activation blocks (nothing after the sum) are built from it.

- **`Residual.backward(grad_output)`**: `g_s = act'(grad_output)` (call `self.act.backward`; `g_s =
  grad_output` without an activation); the sum hands `g_s` unchanged to both paths: backward through the
  branch's layers in reverse order, and through the shortcut (`shortcut'(g_s) = g_s` for the identity);
  the input gradients add: `dx = branch'(g_s) + shortcut'(g_s)`. That `+ g_s` is why residual connections
  keep early-layer gradients from vanishing. Do not modify `g_s` in place: two paths use it.
- **`processing_block(channels, batch_norm=False, residual=False)`** (`minigrad/models/vgg.py`): create,
  in this order, `conv0` (3x3, padding 1, no bias), `bn0` (only with `batch_norm`), `act0` (LeakyReLU
  0.01), `conv1` (like conv0), `bn1` (only with `batch_norm`), in an `OrderedDict`, then `act` (LeakyReLU
  0.01). With `residual` return `nn.Residual(layers, activation=act)`; else add `act` to the layers and
  return `nn.Sequential(layers)`. BN goes after each convolution and before the activation: that
  placement is what lets VGG38 train.
- **`reduction_block(channels, batch_norm=False, shortcut="none")`**: as above but the convs have a bias,
  and an `AvgPool2d(2)` named `pool` follows `act0`. `shortcut` is `"none"` (an `nn.Sequential` as above),
  `"avgpool"` (shortcut module `AvgPool2d(2)`) or `"conv1x1"` (`nn.ConvShortcut(c, c, stride=2,
  bias=not batch_norm, batch_norm=batch_norm)`); with a shortcut, create it after the layers and before
  `act`, and return `nn.Residual(layers, shortcut=..., activation=act)`. An unknown `shortcut` is a
  ValueError. Parameter names must be exactly these (`conv0.weight`, `bn0.running_mean`,
  `shortcut.conv.weight`, ...): the grader loads the library's weights into your block by name. Create
  the layers in this order, so that the same seed gives the same initial weights as the library.

{gradcheck}
## The experiment: the VGG38 BN/RC rows and gradient flow

Once every item passes, reproduce the report's rows for VGG38 with batch normalisation (BN), residual
connections (RC) and both, next to the plain VGG08 and VGG38:

```bash
for model in VGG08 VGG38 VGG38_BN VGG38_RC VGG38_BN_RC; do
  python -m experiments.vgg_depth --model $model --out results/depth
done
python -m experiments.vgg_depth --collect results/depth --out results/depth
```

`results/depth/results.md` has the table; `grad_flow_first.png` and `grad_flow_last.png` the mean
|dL/dW| per layer from the input for every row. Explain which of BN and RC rescues VGG38, and how the
gradient-flow plots show it (the coursework report in `../shared/papers/` is the reference).
"""

ASSIGNMENTS = {
    "mlp": Assignment(
        name="mlp",
        title="MLP basics: Linear, ReLU/LeakyReLU, cross-entropy, Adam",
        items=(
            Item("Linear.backward", "linear", ("minigrad.nn.linear:Linear.backward",)),
            Item("ReLU.backward", "relu", ("minigrad.nn.activation:ReLU.backward",
                                           "minigrad.kernels.activation:_relu_backward*")),
            Item("LeakyReLU.backward", "leaky_relu", ("minigrad.nn.activation:LeakyReLU.backward",
                                                      "minigrad.kernels.activation:_leaky_relu_backward*")),
            Item("CrossEntropyLoss.backward", "cross_entropy", ("minigrad.nn.loss:CrossEntropyLoss.backward",)),
            Item("Adam.step", "adam", ("minigrad.optim.adam:Adam._step_group",)),
        ),
        text=MLP_TEXT.replace("{gradcheck}", _GRADCHECK.format(examples="""\
print(gradcheck(nn.Linear(5, 3), (4, 5)))
print(gradcheck(nn.ReLU(), np.random.default_rng(0).choice([-1.0, 1.0], (3, 4)) * 0.5))  # away from 0
print(gradcheck(nn.LeakyReLU(0.2), np.random.default_rng(1).choice([-1.0, 1.0], (3, 4)) * 0.5))"""))),
    "conv": Assignment(
        name="conv",
        title="Convolutions and normalisation: Conv2d, BatchNorm2d, AvgPool2d",
        items=(
            Item("Conv2d.backward", "conv2d", ("minigrad.nn.conv:Conv2d.backward",)),
            Item("BatchNorm2d.backward", "batchnorm2d", ("minigrad.nn.batchnorm:_BatchNorm.backward",
                                                         "minigrad.kernels.batchnorm:*backward*")),
            Item("AvgPool2d.backward", "avgpool2d", ("minigrad.nn.pooling:AvgPool2d.backward",
                                                     "minigrad.kernels.pooling:avg_pool_backward*")),
        ),
        text=CONV_TEXT.replace("{gradcheck}", _GRADCHECK.format(examples="""\
print(gradcheck(nn.Conv2d(3, 4, (2, 3), stride=(2, 1), padding=(1, 0)), (2, 3, 7, 5)))
print(gradcheck(nn.BatchNorm2d(3), (4, 3, 5, 2)))            # training: batch statistics
print(gradcheck(nn.BatchNorm2d(3).eval(), (4, 3, 5, 2)))     # eval: running statistics
print(gradcheck(nn.AvgPool2d((2, 3), stride=1), (2, 3, 6, 5)))"""))),
    "depth": Assignment(
        name="depth",
        title="Depth: residual connections and BN placement",
        items=(
            Item("Residual.backward", "residual", ("minigrad.nn.residual:Residual.backward",), points=20),
            Item("processing_block", "processing_block", ("minigrad.models.vgg:processing_block",)),
            Item("reduction_block", "reduction_block", ("minigrad.models.vgg:reduction_block",)),
        ),
        text=DEPTH_TEXT.replace("{gradcheck}", _GRADCHECK.format(examples="""\
from minigrad.models.resnet import resnet_block
from minigrad.models.vgg import processing_block, reduction_block
print(gradcheck(nn.Residual(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4),
                            shortcut=nn.ConvShortcut(3, 4, stride=2), activation=nn.Tanh()), (2, 3, 6, 5)))
print(gradcheck(processing_block(3, batch_norm=True, residual=True), (2, 3, 6, 4)))
print(gradcheck(reduction_block(3, batch_norm=True, shortcut="conv1x1"), (2, 3, 6, 4)))
print(gradcheck(resnet_block(3, 5, stride=2), (2, 3, 7, 6)))
print(list(processing_block(3, batch_norm=True).state_dict()))   # compare with the names above"""))),
}


def get_assignment(name):
    """The assignment called ``name``; a ValueError listing the known ones otherwise."""
    if name not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {name!r}; choose one of {', '.join(ASSIGNMENTS)}")
    return ASSIGNMENTS[name]
