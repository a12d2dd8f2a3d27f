"""Checkpoints: exact round trips, atomic pairs, clear errors for bad files, never pickle."""
import hashlib
import io
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minigrad
from minigrad import checkpoint, nn, optim
from minigrad.checkpoint import (
    CheckpointError, capture_state, decode_state, encode_state, load_checkpoint, restore_state,
    save_checkpoint,
)
from minigrad.random import get_rng_state


class Noisy(nn.Module):
    """A layer holding a parameter, a buffer and its own Generator (like dropout with ``generator=``)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
        self.register_buffer("count", np.array(0, dtype=np.int64))
        self.generator = np.random.default_rng(5)


def _model():
    minigrad.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), Noisy())


def _train_steps(model, optimizer, scheduler, steps, rng):
    """A few Adam steps with random gradients, stepping the scheduler and every generator."""
    for _ in range(steps):
        for p in model.parameters():
            p.grad[...] = rng.standard_normal(p.shape)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        model[3].generator.random()
        minigrad.random.default_generator().random()


def _setup():
    model = _model()
    optimizer = optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-4)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4, eta_min=1e-4)
    return model, optimizer, scheduler


def _same(a, b):
    """Structural equality with bit-exact arrays (dtype, shape and bytes) and exact types."""
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


# --------------------------------------------------------------------------------------- codec
arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.float16]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
)
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-2**130, 2**130), st.floats(width=64), st.text(max_size=5),
    arrays, st.sampled_from([np.float32(1.5), np.int64(-3), np.float64(np.nan), np.uint8(7)]),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-5, 5)), children, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=40)
@given(trees)
def test_codec_round_trip_is_exact(tree):
    encoded, arrays_out = encode_state(tree)
    text = json.dumps(encoded, allow_nan=False)  # strict JSON: NaN/Inf are tagged, never bare
    _same(decode_state(json.loads(text), arrays_out), tree)


def test_codec_refuses_what_needs_pickle():
    with pytest.raises(TypeError, match=r"state\.x.*object arrays"):
        encode_state({"x": np.array([{}], dtype=object)})
    with pytest.raises(TypeError, match=r"state\.y\[0\].*set"):
        encode_state({"y": [{1, 2}]})


# --------------------------------------------------------------------------------------- round trip
def test_training_state_round_trip_is_bit_exact(tmp_path, rng):
    model, optimizer, scheduler = _setup()
    _train_steps(model, optimizer, scheduler, 3, rng)
    extra = {"epoch": 3, "best": {"epoch": 2, "val_acc": 0.625, "val_loss": 0.1 + 0.2},
             "history": [{"epoch": 1, "train_loss": float("nan")}], "config": {"betas": (0.8, 0.99)}}
    state = capture_state(model, optimizer, scheduler, extra)
    save_checkpoint(tmp_path, "latest", state)
    # what the run would have done next, to compare the restored run against
    reference = [capture_state(model, optimizer, scheduler)]
    _train_steps(model, optimizer, scheduler, 2, np.random.default_rng(9))
    reference.append(capture_state(model, optimizer, scheduler))

    model2, optimizer2, scheduler2 = _setup()  # a fresh process would build these from the config
    minigrad.manual_seed(123)  # some other global RNG state
    loaded = load_checkpoint(tmp_path, "latest")
    _same(loaded, state)
    _same(restore_state(loaded, model2, optimizer2, scheduler2), extra)
    _same(capture_state(model2, optimizer2, scheduler2), reference[0])
    assert optimizer2.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"] - 2
    _train_steps(model2, optimizer2, scheduler2, 2, np.random.default_rng(9))
    _same(capture_state(model2, optimizer2, scheduler2), reference[1])  # and it continues identically


def _noisy_dropout_run(steps, start=None, restore=None, seed=0):
    """SGD steps on a dropout MLP whose input noise comes from the global generator and whose masks come from
    the Dropout's own generator; returns the outputs of each step (they show every draw) and the objects."""
    minigrad.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if restore is not None:
        restore(model, optimizer)
    base = np.linspace(-1, 1, 16 * 4).reshape(16, 4)
    outputs = []
    for _ in range(steps):
        x = base + minigrad.random.default_generator().standard_normal(base.shape)
        y = model(x)
        optimizer.zero_grad()
        model.backward((y - 1.0) / len(y))  # d/dy of the mean squared error / 2
        optimizer.step()
        assert np.all(np.isfinite(y))
        outputs.append(y)
    return outputs, model, optimizer


def test_restored_generators_continue_the_same_random_draws(tmp_path):
    """Without a Trainer (it reseeds every generator at each epoch from (seed, epoch), which would hide a
    restore that forgot them): a run checkpointed after 3 steps and restored into freshly built objects whose
    generators are elsewhere draws exactly the uninterrupted run's input noise and dropout masks."""
    reference, _, _ = _noisy_dropout_run(6)
    _, model, optimizer = _noisy_dropout_run(3)
    save_checkpoint(tmp_path, "latest", capture_state(model, optimizer))

    def restore(model, optimizer):
        restore_state(load_checkpoint(tmp_path, "latest"), model, optimizer)

    resumed, _, _ = _noisy_dropout_run(3, restore=restore, seed=99)  # seed 99: other weights, other generators
    for got, want in zip(resumed, reference[3:]):
        np.testing.assert_array_equal(got, want)

    def weights_only(model, optimizer):  # the control: the same run with the generators left alone
        state = load_checkpoint(tmp_path, "latest")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])

    unrestored, _, _ = _noisy_dropout_run(3, restore=weights_only, seed=99)
    assert not np.array_equal(unrestored[0], reference[3])


def test_saved_files_are_a_consistent_pair(tmp_path):
    model, optimizer, scheduler = _setup()
    save_checkpoint(tmp_path, "latest", capture_state(model, optimizer, scheduler))
    meta = json.loads((tmp_path / "latest.json").read_text())
    npz = tmp_path / meta["arrays_file"]
    assert npz.read_bytes().__len__() == meta["arrays_size"]
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == meta["arrays_sha256"]
    # JSON holds the scalars (lr, step counts, RNG state), the npz the arrays
    assert meta["state"]["scheduler"]["base_lrs"] == [1e-2]
    assert meta["state"]["rng"]["global"]["bit_generator"] == "PCG64"
    with np.load(npz, allow_pickle=False) as data:
        assert len(data.files) == 6  # 5 model arrays (4 Linear + Noisy.weight) + the Noisy buffer; Adam has no state yet
    # a second save replaces the pair and removes the old npz; "best" lives beside it
    optimizer.step()
    save_checkpoint(tmp_path, "latest", capture_state(model, optimizer, scheduler))
    save_checkpoint(tmp_path, "best", capture_state(model))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len([n for n in names if n.startswith("latest-")]) == 1
    assert names == sorted(["latest.json", "best.json", json.loads((tmp_path / "latest.json").read_text())["arrays_file"],
                            json.loads((tmp_path / "best.json").read_text())["arrays_file"]])


def test_crash_between_npz_and_json_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer, scheduler = _setup()
    first = capture_state(model, optimizer, scheduler, {"epoch": 1})
    save_checkpoint(tmp_path, "latest", first)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt("killed after the npz was written")

    monkeypatch.setattr(checkpoint, "write_json_atomic", dies)
    optimizer.step()
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, "latest", capture_state(model, optimizer, scheduler, {"epoch": 2}))
    monkeypatch.undo()
    assert len(list(tmp_path.glob("latest-*.npz"))) == 2  # the orphan npz of the dead save
    _same(load_checkpoint(tmp_path, "latest"), first)
    (tmp_path / ".latest.json.abc123.tmp").write_text("{half a JSON")  # a write that died
    (tmp_path / "best-0123456789abcdef.npz").write_bytes(b"npz of a first save that died")
    assert sorted(checkpoint.remove_orphans(tmp_path))[:2] == [".latest.json.abc123.tmp", "best-0123456789abcdef.npz"]
    assert len(list(tmp_path.glob("latest-*.npz"))) == 1 and not list(tmp_path.glob("best*"))
    _same(load_checkpoint(tmp_path, "latest"), first)
    optimizer.step()
    with pytest.raises(KeyboardInterrupt):
        with monkeypatch.context() as patch:
            patch.setattr(checkpoint, "write_json_atomic", dies)
            save_checkpoint(tmp_path, "latest", capture_state(model, optimizer, scheduler, {"epoch": 2}))
    save_checkpoint(tmp_path, "latest", capture_state(model, optimizer, scheduler, {"epoch": 2}))
    assert len(list(tmp_path.glob("latest-*.npz"))) == 1  # a save also cleans up after a dead one
    assert load_checkpoint(tmp_path, "latest")["extra"] == {"epoch": 2}


# --------------------------------------------------------------------------------------- bad files
def _saved(tmp_path, steps=1):
    model, optimizer, scheduler = _setup()
    for _ in range(steps):
        optimizer.step()
    save_checkpoint(tmp_path, "latest", capture_state(model, optimizer, scheduler, {"epoch": 1}))
    meta = json.loads((tmp_path / "latest.json").read_text())
    return tmp_path / "latest.json", tmp_path / meta["arrays_file"], meta


def _rewrite_npz(npz_path, json_path, meta, arrays, **savez_kwargs):
    """Replace the arrays with ``arrays`` and make the JSON's size/sha256 match them."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    npz_path.write_bytes(data)
    meta = dict(meta, arrays_size=len(data), arrays_sha256=hashlib.sha256(data).hexdigest())
    json_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", ["truncate", "flip", "missing", "swap"])
def test_damaged_arrays_file_is_named(tmp_path, damage):
    json_path, npz_path, meta = _saved(tmp_path)
    data = npz_path.read_bytes()
    if damage == "truncate":
        npz_path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        npz_path.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "missing":
        npz_path.unlink()
    else:  # an npz from another save (a different state) under the expected name
        other = tmp_path / "other"
        _, other_npz, _ = _saved(other, steps=2)
        npz_path.write_bytes(other_npz.read_bytes())
    with pytest.raises(CheckpointError, match=npz_path.name):
        load_checkpoint(tmp_path, "latest")


@pytest.mark.parametrize("damage", ["garbage", "truncate", "not-ours", "version", "path", "absent"])
def test_damaged_index_file_is_named(tmp_path, damage):
    json_path, npz_path, meta = _saved(tmp_path)
    text = json_path.read_text()
    if damage == "garbage":
        json_path.write_bytes(b"\xff\x00 not json")
    elif damage == "truncate":
        json_path.write_text(text[: len(text) // 2])
    elif damage == "not-ours":
        json_path.write_text(json.dumps({"epoch": 3}))
    elif damage == "version":
        json_path.write_text(json.dumps(dict(meta, version=99)))
    elif damage == "path":
        json_path.write_text(json.dumps(dict(meta, arrays_file="../elsewhere.npz")))
    else:
        json_path.unlink()
    with pytest.raises(CheckpointError, match="latest.json"):
        load_checkpoint(tmp_path, "latest")


def test_json_and_npz_disagreeing_on_arrays(tmp_path):
    json_path, npz_path, meta = _saved(tmp_path)
    with np.load(npz_path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    _rewrite_npz(npz_path, json_path, meta, dict(arrays, extra=np.zeros(2)))
    with pytest.raises(CheckpointError, match="does not name"):
        load_checkpoint(tmp_path, "latest")
    arrays.pop("a0")
    _rewrite_npz(npz_path, json_path, meta, arrays)
    with pytest.raises(CheckpointError, match="'a0'"):
        load_checkpoint(tmp_path, "latest")


def test_loading_never_unpickles(tmp_path, monkeypatch):
    json_path, npz_path, meta = _saved(tmp_path)
    # an object array in the npz (np.savez pickles it) with a matching sha256 is refused, not run
    _rewrite_npz(npz_path, json_path, meta, {"a0": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path, "latest")
    # and a normal load works with pickle disabled altogether
    json_path, npz_path, meta = _saved(tmp_path / "clean")

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    assert load_checkpoint(tmp_path / "clean", "latest")["extra"] == {"epoch": 1}


def test_checkpoint_that_does_not_fit_is_never_half_used(tmp_path):
    model, optimizer, scheduler = _setup()
    optimizer.step()
    save_checkpoint(tmp_path, "latest", capture_state(model, optimizer, scheduler))
    state = load_checkpoint(tmp_path, "latest")
    # a model whose last layer differs: the first layers would load, the last cannot
    minigrad.manual_seed(1)
    other = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2), Noisy())
    other_opt = optim.Adam(other.parameters(), lr=0.5)
    other_sched = optim.lr_scheduler.CosineAnnealingLR(other_opt, T_max=9)
    before = capture_state(other, other_opt, other_sched)
    with pytest.raises(CheckpointError, match="latest.json"):
        restore_state(state, other, other_opt, other_sched, source=tmp_path / "latest.json")
    _same(capture_state(other, other_opt, other_sched), before)
    # the model fits but the scheduler state is missing: the model must not be half-loaded either
    model2, optimizer2, scheduler2 = _setup()
    model2[0].weight.data += 1
    before = capture_state(model2, optimizer2, scheduler2)
    with pytest.raises(CheckpointError, match="scheduler"):
        restore_state(dict(state, scheduler=None), model2, optimizer2, scheduler2)
    _same(capture_state(model2, optimizer2, scheduler2), before)
    assert get_rng_state() == before["rng"]["global"]


@pytest.mark.parametrize("other", ["SGD", "AdamW"])
def test_checkpoint_of_another_optimiser_is_refused_naming_both(tmp_path, other):
    model, optimizer, scheduler = _setup()  # Adam
    _train_steps(model, optimizer, scheduler, 2, np.random.default_rng(0))
    save_checkpoint(tmp_path, "latest", capture_state(model, optimizer, scheduler))
    state = load_checkpoint(tmp_path, "latest")
    model2 = _model()
    model2[0].weight.data += 1
    make = {"SGD": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), "AdamW": lambda ps: optim.AdamW(ps, lr=1e-2)}
    optimizer2 = make[other](model2.parameters())
    scheduler2 = optim.lr_scheduler.CosineAnnealingLR(optimizer2, T_max=4, eta_min=1e-4)
    before = capture_state(model2, optimizer2, scheduler2)
    with pytest.raises(CheckpointError, match=rf"latest\.json.*Adam\b.*not .*{other}\b"):
        restore_state(state, model2, optimizer2, scheduler2, source=tmp_path / "latest.json")
    _same(capture_state(model2, optimizer2, scheduler2), before)


def test_bad_names_are_refused(tmp_path):
    for bad in ("../x", "a/b", "", "x y"):
        with pytest.raises(ValueError, match="checkpoint name"):
            save_checkpoint(tmp_path, bad, {})
