"""Guards of the performance design (no timings): packed layout, donation, no hidden copies or transfers."""

import jax
import jax.numpy as jnp
import numpy as np

import funcopt as fo
from tests.optim import internals


def _many_leaves(n=60):
    rng = np.random.default_rng(0)
    tree = {f"layer{i}": {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
                          "b": jnp.zeros(2, jnp.float32)} for i in range(n)}
    tree["emb"] = jnp.ones((4, 2), jnp.bfloat16)
    return tree


def test_elementwise_optimizer_packs_each_dtype_into_one_buffer():
    opt = fo.optim.Adam(_many_leaves())
    storage = internals.storage(opt)
    assert [b.dtype for b in storage] == [jnp.bfloat16, jnp.float32]  # flattening order: 'emb' first
    assert [b.ndim for b in storage] == [1, 1]
    assert sum(b.size for b in storage) == sum(x.size for x in jax.tree.leaves(_many_leaves()))
    # per-tensor algorithms keep their leaves
    assert len(internals.storage(fo.optim.LAMB(_many_leaves(), lr=1e-3))) == 121


def test_packed_and_per_leaf_layouts_give_identical_numbers():
    class PerLeafAdam(fo.optim.Adam):
        elementwise = False

    params = _many_leaves(5)
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), params)
    a, b = fo.optim.Adam(params, lr=0.1), PerLeafAdam(params, lr=0.1)
    for _ in range(3):
        a(grads)
        b(grads)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    jax.tree.map(np.testing.assert_array_equal, a.state_dict()["state"], b.state_dict()["state"])


def test_steps_keep_no_extra_copies_alive():
    import gc

    gc.collect()
    others = {id(x) for x in jax.live_arrays()}  # arrays other tests in this process still hold
    opt = fo.optim.AdamW(_many_leaves())
    opt.zero_grad(set_to_none=False)
    opt.step()

    def held():
        gc.collect()
        return sum(x.nbytes for x in jax.live_arrays() if id(x) not in others)

    before = held()
    for _ in range(10):
        opt.step()
    assert held() == before
    storage = internals.storage(opt) + opt.grad_storage()[0] + jax.tree.leaves(internals.group_state(opt))
    assert before - sum(x.nbytes for x in storage) < 4096  # little besides params, grads and state


def test_step_makes_no_host_transfers_once_compiled():
    opt = fo.optim.SGD(_many_leaves(), lr=0.1, momentum=0.9)
    opt.zero_grad(set_to_none=False)
    opt.step()
    with jax.transfer_guard("disallow"):
        for _ in range(3):
            opt.step()


def test_many_leaves_compile_to_one_small_step():
    opt = fo.optim.Adam(_many_leaves(200))
    opt.zero_grad(set_to_none=False)
    opt.step()
    hlo = internals.step_hlo(opt)
    # the compiled step sees two packed buffers, not 401 leaves: no slicing or per-leaf ops
    assert hlo.count("slice") == 0 and hlo.count("concatenate") == 0


def _loops_reading_params(opt):
    """How many loops of the optimized step read the packed parameters (XLA's fusions, after optimization)."""
    compiled = internals.step_hlo(opt, optimized=True)
    entry = compiled[compiled.index("ENTRY"):]
    param = next(line.split("=")[0].strip() for line in entry.splitlines() if "parameter(0)" in line)
    return sum(1 for line in entry.splitlines() if " fusion(" in line and param + "," in line.split("fusion(")[1]
               or line.rstrip().endswith(param + ")"))


def test_zero_weight_decay_does_not_read_the_parameters_for_it():
    params = {"w": jnp.ones(1000)}
    opt = fo.optim.Adam(params, lr=0.1)  # weight_decay=0: only the parameter update reads them
    opt.zero_grad(set_to_none=False)
    opt.step()
    assert internals.step_variant(opt) == (True,)
    assert _loops_reading_params(opt) == 1
    decayed = fo.optim.Adam(params, lr=0.1, weight_decay=0.1)  # g + wd * p: the moment updates read them too
    decayed.zero_grad(set_to_none=False)
    decayed.step()
    assert internals.step_variant(decayed) == (False,)
    assert _loops_reading_params(decayed) > 1


def test_weight_decay_edits_switch_variants_without_compiling_and_follow_torch(compiles):
    import torch

    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    grads = [jnp.asarray(rng.standard_normal((4, 3)).astype(np.float32)) for _ in range(9)]
    opt = fo.optim.Adam({"w": jnp.asarray(w0)}, lr=0.1)
    tw = torch.nn.Parameter(torch.tensor(w0))
    topt = torch.optim.Adam([tw], lr=0.1)
    per_step = []
    for i, g in enumerate(grads):
        wd = [0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.25, 0.0][i]
        opt.param_groups[0]["weight_decay"] = wd
        topt.param_groups[0]["weight_decay"] = wd
        before = len(compiles)
        opt({"w": g})
        per_step.append(len(compiles) - before)
        tw.grad = torch.tensor(np.asarray(g))
        topt.step()
        np.testing.assert_allclose(np.asarray(opt.params["w"]), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    # the first step compiles the literal-zero variant only; the general one compiles when the weight decay
    # first leaves 0, and no edit compiles anything after
    assert per_step == [1, 0, 0, 1, 0, 0, 0, 0, 0], per_step


def test_parameters_placed_on_a_device_compile_one_step_program_across_lr_edits(compiles):
    """A step over committed parameters returns its scalars (step count, hyperparameters) committed.

    The state built at construction, and each value an lr edit writes, start uncommitted; jit compiles
    again for arguments placed differently, so without placing them first the second step and each step
    after an edit compiled a program of its own. (On a mesh the same holds: tests/sharding.)
    """
    device = jax.devices()[-1]
    params = {"w": jax.device_put(jnp.ones((3, 2)), device), "b": jax.device_put(jnp.zeros(2), device)}
    grads = {"w": jnp.full((3, 2), 0.1), "b": jnp.full(2, 0.2)}
    opt = fo.optim.Adam(params, lr=0.1)
    reference = fo.optim.Adam(jax.tree.map(np.asarray, params), lr=0.1)  # uncommitted: the plain case
    per_step = []
    for lr in [0.1, 0.1, 0.05, 0.05, 0.02, 0.01]:
        for o in (opt, reference):
            o.param_groups[0]["lr"] = lr
        before = len(compiles)
        opt(grads)
        per_step.append(len(compiles) - before)
        reference(grads)
    assert per_step == [1, 0, 0, 0, 0, 0], per_step
    assert all(x.committed and x.devices() == {device} for x in jax.tree.leaves(internals.group_state(opt)))
    jax.tree.map(np.testing.assert_array_equal, opt.params, reference.params)
