"""torch.optim's hooks: step, state_dict and load_state_dict hooks, and their handles."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class RemovableHandle:
    """A handle returned by the ``register_*_hook`` methods; ``remove()`` unregisters the hook.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.ones(2)}, lr=0.1)
        >>> handle = opt.register_step_post_hook(lambda opt, args, kwargs: None)
        >>> handle.registered
        True
        >>> handle.remove()
        >>> handle.registered
        False
    """

    _next_id = 0

    def __init__(self, hooks: dict[int, Callable[..., Any]]) -> None:
        self._hooks_ref = weakref.ref(hooks)
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    @property
    def registered(self) -> bool:
        """Whether the hook is still registered (not removed)."""
        hooks = self._hooks_ref()
        return hooks is not None and self.id in hooks

    def remove(self) -> None:
        hooks = self._hooks_ref()
        if hooks is not None:
            hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _register(hooks: OrderedDict[int, Callable[..., Any]], hook: Callable[..., Any],
              prepend: bool = False) -> RemovableHandle:
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


class HookRegistry:
    """The ``register_*_hook`` methods of :class:`~funcopt.optim.Optimizer`, and the calls of the hooks."""

    def _init_hooks(self) -> None:
        self._step_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._step_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._state_dict_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._state_dict_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._load_state_dict_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._load_state_dict_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()

    # ------------------------------------------------------------------ calls

    def _call_step_pre_hooks(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                             replace: bool = True) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Call the step pre hooks; with ``replace``, a hook may return new ``(args, kwargs)``."""
        for hook in list(self._step_pre_hooks.values()):
            out = hook(self, args, kwargs)
            if replace and out is not None:
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise RuntimeError(f"optimizer step pre hook must return None or a tuple of "
                                       f"(new_args, new_kwargs), but got {out!r}")
                args, kwargs = out
        return args, kwargs

    def _call_step_post_hooks(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for hook in list(self._step_post_hooks.values()):
            hook(self, args, kwargs)

    def _state_dict_with_hooks(self, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``build()``'s state_dict, with the pre hooks called before and the post hooks' replacements."""
        for hook in list(self._state_dict_pre_hooks.values()):
            hook(self)
        sd = build()
        for hook in list(self._state_dict_post_hooks.values()):
            out = hook(self, sd)
            if out is not None:
                sd = out
        return sd

    def _call_load_state_dict_pre_hooks(self, state_dict: Any) -> Any:
        for hook in list(self._load_state_dict_pre_hooks.values()):
            out = hook(self, state_dict)
            if out is not None:
                state_dict = out
        return state_dict

    def _call_load_state_dict_post_hooks(self) -> None:
        for hook in list(self._load_state_dict_post_hooks.values()):
            hook(self)

    # ------------------------------------------------------------------ registration

    def register_step_pre_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """Call ``hook(optimizer, args, kwargs)`` before each step; it may return new ``(args, kwargs)``.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(1)})
            >>> calls = []
            >>> h = opt.register_step_pre_hook(lambda o, a, k: calls.append('pre'))
            >>> _ = opt({'w': jnp.ones(1)}); calls
            ['pre']
        """
        return _register(self._step_pre_hooks, hook)

    def register_step_post_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """Call ``hook(optimizer, args, kwargs)`` after each step.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(1)})
            >>> h = opt.register_step_post_hook(lambda o, a, k: print('stepped'))
            >>> _ = opt({'w': jnp.ones(1)})
            stepped
        """
        return _register(self._step_post_hooks, hook)

    def register_state_dict_pre_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """Call ``hook(optimizer)`` before :meth:`state_dict` builds its result.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(1)})
            >>> h = opt.register_state_dict_pre_hook(lambda o: print('saving'))
            >>> _ = opt.state_dict()
            saving
        """
        return _register(self._state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """Call ``hook(optimizer, state_dict)``; a returned dict replaces the state_dict.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(1)})
            >>> h = opt.register_state_dict_post_hook(lambda o, sd: {**sd, 'epoch': 3})
            >>> opt.state_dict()['epoch']
            3
        """
        return _register(self._state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable[..., Any],
                                          prepend: bool = False) -> RemovableHandle:
        """Call ``hook(optimizer, state_dict)`` before loading; a returned dict is loaded instead.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(1)})
            >>> h = opt.register_load_state_dict_pre_hook(lambda o, sd: print('loading'))
            >>> _ = opt.load_state_dict(opt.state_dict())
            loading
        """
        return _register(self._load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(self, hook: Callable[..., Any],
                                           prepend: bool = False) -> RemovableHandle:
        """Call ``hook(optimizer)`` after a successful load.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(1)})
            >>> h = opt.register_load_state_dict_post_hook(lambda o: print('loaded'))
            >>> _ = opt.load_state_dict(opt.state_dict())
            loaded
        """
        return _register(self._load_state_dict_post_hooks, hook, prepend)
