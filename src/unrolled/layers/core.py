"""The layers around a recurrent layer: Dense, Embedding, Masking and Dropout, exact to Keras 3.

Masks travel beside the arrays: `layer.compute_mask(inputs, mask)` gives the `(batch, timesteps)`
mask that goes with `layer(inputs)`, and a recurrent layer takes it as `rnn(x, mask=mask)`.
Embedding (with `mask_zero=True`) and Masking make a mask; Dense and Dropout pass one on.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from unrolled import _checks, _random, activations, initializers
from unrolled.layers.base import Layer

__all__ = ["Dense", "Embedding", "Masking", "Dropout"]


# OpenBLAS runs a product of up to this many multiply-adds on one thread by itself
# (unrolled.kernels._threads.STEP_WORK_MIN): below it `_product` is a plain `@`.
_ONE_THREAD_WORK = 4 * 65536


def _product(a: np.ndarray, b: np.ndarray, transpose_a: bool = False) -> np.ndarray:
    """`a @ b` (`a^T b` with `transpose_a`) for 2-D arrays; above `_ONE_THREAD_WORK`, by
    unrolled.kernels._threads.product: off BLAS's own threads while a recurrent layer runs in
    blocks of rows."""
    if a.shape[0] * a.shape[1] * b.shape[1] <= _ONE_THREAD_WORK:
        return a.T @ b if transpose_a else a @ b
    from unrolled.kernels import _threads

    out = np.empty((a.shape[1] if transpose_a else a.shape[0], b.shape[1]),
                   dtype=np.result_type(a, b))
    _threads.product(a, b, out, transpose_a)
    return out


def _refuse_unsupported(owner: str, **values: Any) -> None:
    """LoRA and quantization change what a layer stores; unrolled keeps plain float weights."""
    for name, value in values.items():
        if value is not None:
            what = "LoRA adapters" if name.startswith("lora") else "quantized weights"
            raise ValueError(
                f"{owner}: `{name}={value!r}` asks for {what}, which unrolled does not support. "
                f"Leave `{name}` as None; to use a LoRA-tuned or quantized Keras model, merge or "
                f"dequantize its weights in Keras first and load the float weights."
            )


def _shape_tuple(shape: Any, owner: str) -> tuple:
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__"):
        raise TypeError(f"{owner}: an input shape must be a tuple such as (None, 10, 8), "
                        f"got {shape!r}.")
    return tuple(shape)


class Dense(Layer):
    """A fully connected layer on the last axis: `y = act(x @ kernel + bias)`.

    .. math:: y = \\mathrm{act}(x K + b)

    where:
        x   (..., in_features)       the input, any rank >= 2 (e.g. (batch, timesteps, features))
        K   (in_features, units)     `kernel`
        b   (units,)                 `bias`
        y   (..., units)             the output; all leading axes are kept

    Args:
        units: positive integer, the size of the output's last axis.
        activation: activation name or callable; default None (linear).
        use_bias: whether to add `b`. Default True.
        kernel_initializer: default "glorot_uniform". bias_initializer: default "zeros".
        kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint,
            bias_constraint: accepted and stored as in Keras; they act only in training.
        lora_rank, lora_alpha, quantization_config: not supported; must stay None.
        name, dtype, trainable: as for every layer.

    Call arguments:
        inputs: `(..., in_features)`.

    Returns:
        `(..., units)`. A mask, if any, passes through unchanged (`compute_mask`).

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> dense = layers.Dense(2, activation="softmax")
        >>> dense(np.ones((4, 7, 3))).shape       # (batch, timesteps, units)
        (4, 7, 2)
        >>> [w.shape for w in dense.get_weights()]    # kernel, bias
        [(3, 2), (2,)]
    """

    supports_masking = True
    _pointwise = True  # TimeDistributed may fold time into the batch axis: same numbers

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 bias_constraint: Any = None, lora_rank: Any = None, lora_alpha: Any = None,
                 quantization_config: Any = None, **kwargs: Any):
        owner = type(self).__name__
        units = _checks.positive_int(units, "units", owner)
        _refuse_unsupported(owner, lora_rank=lora_rank, lora_alpha=lora_alpha,
                            quantization_config=quantization_config)
        super().__init__(**kwargs)
        self.units = units
        self.activation = activations.get(activation, argument="activation")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer,
                                                   argument="kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, argument="bias_initializer")
        self.kernel_regularizer = kernel_regularizer
        self.bias_regularizer = bias_regularizer
        self.activity_regularizer = activity_regularizer
        self.kernel_constraint = kernel_constraint
        self.bias_constraint = bias_constraint

    def build(self, input_shape: Any) -> None:
        input_shape = _shape_tuple(input_shape, type(self).__name__)
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                f"Dense '{self.name}'.build needs a shape (batch, ..., features) with a known "
                f"feature size, got {input_shape}."
            )
        self.kernel = self.add_weight((input_shape[-1], self.units), self.kernel_initializer,
                                      name="kernel")
        self.bias = (self.add_weight((self.units,), self.bias_initializer, name="bias")
                     if self.use_bias else None)
        super().build(input_shape)

    def __call__(self, inputs: Any, training: Any = None) -> np.ndarray:
        return self.call(self._checked(inputs))

    def _checked(self, inputs: Any) -> np.ndarray:
        # the input as an array of the layer's dtype, checked; builds the layer on first use
        owner = f"Dense '{self.name}'"
        x = _checks.as_float_array(inputs, "inputs", owner, np.dtype(self.dtype))
        if x.ndim < 2:
            raise ValueError(
                f"{owner} expects input with at least 2 axes (batch, ..., features), got "
                f"{x.ndim}-D input of shape {_checks.shape_str(x.shape)}. Add a batch axis "
                f"(x[None]) for one sample."
            )
        self._maybe_build(x.shape)
        self.check_input_features(x.shape[-1], "inputs")
        return x

    def call(self, inputs: np.ndarray, training: Any = None) -> np.ndarray:
        return np.asarray(self.activation(self._pre_activation(inputs)), dtype=self.dtype)

    def _pre_activation(self, x: Any) -> np.ndarray:
        # x @ kernel (+ bias), (..., units): one product over all leading axes at once, kept
        # off BLAS's own threads while a recurrent layer runs in blocks of rows (`_product`)
        x = np.asarray(x)
        if x.ndim == 2:
            z = _product(x, self.kernel)
        elif x.ndim == 3 and not x.flags.c_contiguous and x.transpose(1, 0, 2).flags.c_contiguous:
            # A (batch, timesteps, features) view of a time-major array, as a recurrent layer's
            # `return_sequences` output is: multiplied where it lies, the result viewed the same
            # way. Reshaping the view copied it (0.12 ms of a 0.9 ms Dense(64) call after an
            # LSTM(256) over (32, 100)).
            return self._pre_activation(x.transpose(1, 0, 2)).transpose(1, 0, 2)
        else:
            z = _product(x.reshape(-1, x.shape[-1]), self.kernel)
            z = z.reshape(*x.shape[:-1], self.units)
        if self.bias is not None:
            z += self.bias
        return z

    # ---------------------------------------------------------------- backward (training)

    def forward_train(self, inputs: Any, training: Any = True) -> tuple[np.ndarray, dict]:
        """The call, plus what `backward` needs (the input, pre-activation and output)."""
        x = self._checked(inputs)
        z = self._pre_activation(x)
        y = np.asarray(self.activation(z), dtype=self.dtype)
        return y, {"x": x, "z": z, "y": y}

    def backward(self, cache: dict, d_y: np.ndarray, grads: Any) -> np.ndarray:
        """`y = act(x U + b)` backwards::

            dz  = dy * act'(z)                       (..., units)
            dU += x^T dz    (summed over every leading axis)
            db += sum of dz over every leading axis
            dx  = dz U^T                             (..., features)
        """
        from unrolled.training.derivatives import activation_vjp

        x = cache["x"]
        dz = activation_vjp(self.activation, cache["z"], cache["y"], d_y)
        flat_x = x.reshape(-1, x.shape[-1])                       # (batch*..., features)
        flat_dz = np.asarray(dz).reshape(-1, self.units)          # (batch*..., units)
        grads.add(self, "kernel", _product(flat_x, flat_dz, transpose_a=True))  # (features, units)
        if self.bias is not None:
            grads.add(self, "bias", flat_dz.sum(axis=0))          # (units,)
        return _product(flat_dz, self.kernel.T).reshape(x.shape)  # (..., features)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (*_shape_tuple(input_shape, "Dense.compute_output_shape")[:-1], self.units)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units,
            activation=activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=initializers.serialize(self.kernel_initializer),
            bias_initializer=initializers.serialize(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            quantization_config=None,
        )
        if self.activity_regularizer is not None:  # Keras writes it only when set
            config["activity_regularizer"] = self.activity_regularizer
        return config

    def _repr_fields(self) -> list[str]:
        fields = [f"units={self.units}"]
        name = activations.serialize(self.activation)
        if name != "linear":
            fields.append(f"activation={name}")
        return fields


class Embedding(Layer):
    """A lookup table from integer ids to vectors: `y = embeddings[ids]`.

    where:
        ids          (batch, ...)                  integers in [0, input_dim)
        embeddings   (input_dim, output_dim)       the table, one row per id
        y            (batch, ..., output_dim)      one row per id

    With `mask_zero=True`, id 0 is padding: `compute_mask(ids)` is `ids != 0`, the mask a
    recurrent layer takes as `mask=` to skip the padded steps (so id 0 must not be a real token,
    and `input_dim` counts it).

    Keras gathers whatever id it is given (clipped or filled in by the backend) and casts floats
    to integers silently; unrolled refuses an id outside [0, input_dim) and a non-whole float, with
    an error naming the first offending position.

    Args:
        input_dim: positive integer, the number of ids (vocabulary size, including 0).
        output_dim: positive integer, the size of each vector.
        embeddings_initializer: default "uniform", U(-0.05, 0.05).
        embeddings_regularizer, embeddings_constraint, activity_regularizer: accepted and stored
            as in Keras; they act only in training.
        mask_zero: treat id 0 as padding and produce a mask. Default False.
        weights: optionally the table itself, `(input_dim, output_dim)` (or a list of it).
        input_length: deprecated in Keras 3; warns and is ignored.
        lora_rank, lora_alpha, quantization_config: not supported; must stay None.
        name, dtype, trainable: as for every layer.

    Call arguments:
        inputs: integer ids, any shape (whole-number floats are accepted and cast).

    Returns:
        `(*ids.shape, output_dim)`.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> emb = layers.Embedding(10, 3, mask_zero=True)
        >>> ids = np.array([[4, 2, 0, 0]])                # (batch, timesteps), 0 = padding
        >>> emb(ids).shape                                # (batch, timesteps, output_dim)
        (1, 4, 3)
        >>> emb.compute_mask(ids)
        array([[ True,  True, False, False]])
    """

    _pointwise = True

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer: Any = "uniform",
                 embeddings_regularizer: Any = None, embeddings_constraint: Any = None,
                 mask_zero: bool = False, weights: Any = None, lora_rank: Any = None,
                 lora_alpha: Any = None, quantization_config: Any = None, *,
                 activity_regularizer: Any = None, input_length: Any = None, **kwargs: Any):
        owner = type(self).__name__
        input_dim = _checks.positive_int(input_dim, "input_dim", owner)
        output_dim = _checks.positive_int(output_dim, "output_dim", owner)
        _refuse_unsupported(owner, lora_rank=lora_rank, lora_alpha=lora_alpha,
                            quantization_config=quantization_config)
        if input_length is not None:
            warnings.warn("Embedding: the argument `input_length` is deprecated in Keras 3 and "
                          "ignored; remove it.", UserWarning, stacklevel=2)
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = initializers.get(embeddings_initializer,
                                                       argument="embeddings_initializer")
        self.embeddings_regularizer = embeddings_regularizer
        self.embeddings_constraint = embeddings_constraint
        self.activity_regularizer = activity_regularizer
        self.mask_zero = bool(mask_zero)
        if weights is not None:
            self.build()
            if not (isinstance(weights, (list, tuple)) and len(weights) == 1):
                weights = [weights]
            self.set_weights(list(weights))

    @property
    def supports_masking(self) -> bool:  # type: ignore[override]
        return self.mask_zero

    def build(self, input_shape: Any = None) -> None:
        if self.built:
            return
        self.embeddings = self.add_weight((self.input_dim, self.output_dim),
                                          self.embeddings_initializer, name="embeddings")
        super().build(input_shape)

    def _ids(self, inputs: Any) -> np.ndarray:
        owner = f"Embedding '{self.name}'"
        ids = np.asarray(inputs)
        if ids.dtype.kind == "f":
            whole = np.isfinite(ids) & (ids == np.floor(ids))
            if not whole.all():
                where = tuple(int(i) for i in np.argwhere(~whole)[0])
                raise TypeError(
                    f"{owner}: `inputs` must be integer ids, got floats that are not whole "
                    f"numbers (inputs{list(where)} = {ids[where]!r}). Embedding looks rows up "
                    f"by index; pass ids as integers, e.g. ids.astype('int64')."
                )
        elif ids.dtype.kind not in "iu":
            raise TypeError(
                f"{owner}: `inputs` must be integer ids, got an array of dtype {ids.dtype}. "
                f"Map tokens to integers in [0, {self.input_dim}) first."
            )
        ids = ids.astype(np.int64)
        bad = (ids < 0) | (ids >= self.input_dim)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{owner}: id {int(ids[where])} at inputs{list(where)} is out of range; the "
                f"table has input_dim={self.input_dim} rows, so ids must lie in "
                f"[0, {self.input_dim - 1}] ({int(bad.sum())} id(s) out of range). Raise "
                f"input_dim to the vocabulary size (+1 for padding id 0), or map unknown tokens "
                f"to a reserved id."
            )
        return ids

    def __call__(self, inputs: Any) -> np.ndarray:
        ids = self._ids(inputs)
        self._maybe_build(ids.shape)
        return self.call(ids)

    def call(self, inputs: np.ndarray) -> np.ndarray:
        return np.take(self.embeddings, inputs, axis=0)           # (*ids.shape, output_dim)

    # ---------------------------------------------------------------- backward (training)

    def forward_train(self, inputs: Any, training: Any = True) -> tuple[np.ndarray, dict]:
        ids = self._ids(inputs)
        return self(ids), {"ids": ids}

    def backward(self, cache: dict, d_y: np.ndarray, grads: Any) -> None:
        """A lookup backwards: each row's gradient is added to the row it was read from
        (rows read twice get both). Integer ids have no gradient, so this returns None."""
        from unrolled.kernels import _numba  # np.add.at, compiled where Numba runs

        d_embeddings = np.zeros_like(self.embeddings)             # (input_dim, output_dim)
        _numba.add_rows(d_embeddings, cache["ids"].reshape(-1), d_y.reshape(-1, self.output_dim))
        grads.add(self, "embeddings", d_embeddings)
        return None

    def compute_mask(self, inputs: Any, mask: Any = None) -> np.ndarray | None:
        """`inputs != 0` with `mask_zero=True`, else None (an incoming mask is not passed on)."""
        if not self.mask_zero:
            return None
        return np.asarray(inputs) != 0                            # (batch, timesteps)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (*_shape_tuple(input_shape, "Embedding.compute_output_shape"), self.output_dim)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            embeddings_initializer=initializers.serialize(self.embeddings_initializer),
            embeddings_regularizer=self.embeddings_regularizer,
            activity_regularizer=self.activity_regularizer,
            embeddings_constraint=self.embeddings_constraint,
            mask_zero=self.mask_zero,
            quantization_config=None,
        )
        return config

    def _repr_fields(self) -> list[str]:
        fields = [f"input_dim={self.input_dim}", f"output_dim={self.output_dim}"]
        if self.mask_zero:
            fields.append("mask_zero=True")
        return fields


def _mask_value(value: Any, owner: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{owner}: `mask_value` must be a number (the padding value that marks a skipped "
            f"timestep), got {value!r} ({type(value).__name__})."
        )
    return value


class Masking(Layer):
    """Mark timesteps whose features all equal `mask_value` as padding, and zero them.

    .. math:: m_{b,t} = \\exists f: x_{b,t,f} \\ne v, \\qquad y = m \\cdot x

    where:
        x   (batch, timesteps, features)   the input
        v                                  `mask_value`, compared exactly (in the layer's dtype)
        m   (batch, timesteps)             the mask, `compute_mask(x)`: True where a step is real
        y   (batch, timesteps, features)   x, with every masked step set to zeros

    Args:
        mask_value: the padding value; default 0.0.
        name, dtype, trainable: as for every layer.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> x = np.array([[[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]]])   # (batch, timesteps, features)
        >>> layers.Masking().compute_mask(x)
        array([[ True, False,  True]])
    """

    supports_masking = True
    _pointwise = True

    def __init__(self, mask_value: float = 0.0, **kwargs: Any):
        owner = type(self).__name__
        value = _mask_value(mask_value, owner)
        super().__init__(**kwargs)
        self.mask_value = value

    def _keep(self, x: np.ndarray) -> np.ndarray:
        value = np.asarray(self.mask_value, dtype=x.dtype)
        return np.any(x != value, axis=-1)                        # (batch, timesteps)

    def __call__(self, inputs: Any) -> np.ndarray:
        x = _checks.as_float_array(inputs, "inputs", f"Masking '{self.name}'",
                                   np.dtype(self.dtype))
        self._maybe_build(x.shape)
        return self.call(x)

    def call(self, inputs: np.ndarray) -> np.ndarray:
        keep = self._keep(inputs)[..., None]                      # (batch, timesteps, 1)
        return np.where(keep, inputs, inputs.dtype.type(0))       # (batch, timesteps, features)

    def forward_train(self, inputs: Any, training: Any = True) -> tuple[np.ndarray, dict]:
        y = self(inputs)
        return y, {"keep": self._keep(np.asarray(inputs, dtype=self.dtype))}

    def backward(self, cache: dict, d_y: np.ndarray, grads: Any) -> np.ndarray:
        """Masked timesteps were zeroed, so they pass no gradient back."""
        return np.where(cache["keep"][..., None], d_y, d_y.dtype.type(0))

    def compute_mask(self, inputs: Any, mask: Any = None) -> np.ndarray:
        x = _checks.as_float_array(inputs, "inputs", f"Masking '{self.name}'",
                                   np.dtype(self.dtype))
        return self._keep(x)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return _shape_tuple(input_shape, "Masking.compute_output_shape")

    def get_config(self) -> dict:
        config = super().get_config()
        config["mask_value"] = self.mask_value
        return config

    def _repr_fields(self) -> list[str]:
        return [f"mask_value={self.mask_value}"]

    def __repr__(self) -> str:
        return f"Masking({', '.join(self._repr_fields())})"


def _noise_shape(noise_shape: Any, owner: str) -> tuple | None:
    if noise_shape is None:
        return None
    if isinstance(noise_shape, (str, bytes)) or not hasattr(noise_shape, "__iter__"):
        raise TypeError(
            f"{owner}: `noise_shape` must be a tuple of positive integers or None (one per input "
            f"axis), got {noise_shape!r}. For example (batch, 1, features) drops the same "
            f"features at every timestep."
        )
    dims = tuple(noise_shape)
    for k, dim in enumerate(dims):
        if dim is None:
            continue
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim <= 0:
            raise ValueError(
                f"{owner}: `noise_shape` entries must be positive integers or None, got "
                f"noise_shape[{k}] = {dim!r}."
            )
    return tuple(None if d is None else int(d) for d in dims)


class Dropout(Layer):
    """Inverted dropout: in training, zero each entry with probability `rate`, scale the rest.

    .. math:: y = x \\cdot \\frac{k}{1 - r}, \\quad k \\sim \\mathrm{Bernoulli}(1 - r)

    where:
        x   (batch, ...)   the input
        r                  `rate`
        k   noise_shape    the keep mask, broadcast over x (None entries: x's size)

    Outside training (the default) the layer is the identity, so a trained model's inference
    needs no rescaling. The random keep-masks cannot match Keras's (its generators differ); the
    statistics do: every entry is kept with probability `1 - rate` and scaled by `1 / (1 - rate)`.

    Args:
        rate: the fraction to drop, in [0, 1].
        noise_shape: shape of the keep mask, broadcast over the input; None entries take the
            input's size. Default None (an independent draw per entry).
        seed: integer seed for the masks; default None (from `unrolled.utils.set_random_seed`).
        name, dtype, trainable: as for every layer.

    Call arguments:
        inputs: any shape.
        training: apply dropout. Default False.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> drop = layers.Dropout(0.5, seed=0)
        >>> bool((drop(np.ones((2, 3))) == 1).all())                  # inference: identity
        True
        >>> np.unique(drop(np.ones((2, 3)), training=True)).tolist()   # dropped or scaled
        [0.0, 2.0]
    """

    supports_masking = True

    def __init__(self, rate: float, noise_shape: Any = None, seed: int | None = None,
                 **kwargs: Any):
        owner = type(self).__name__
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate <= 1:
            raise ValueError(
                f"{owner}: `rate` must be a number between 0 and 1 (the fraction of entries to "
                f"drop), got {rate!r}."
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"{owner}: `seed` must be an integer or None, got {seed!r}.")
        noise = _noise_shape(noise_shape, owner)
        super().__init__(**kwargs)
        self.rate = rate
        self.noise_shape = noise
        self.seed = seed
        self._rng = _random.seed_rng(int(seed) if seed is not None
                                     else _random.make_default_seed())

    def __call__(self, inputs: Any, training: Any = False) -> np.ndarray:
        x = _checks.as_float_array(inputs, "inputs", f"Dropout '{self.name}'",
                                   np.dtype(self.dtype))
        self._maybe_build(x.shape)
        return self.call(x, training=training)

    def _mask_shape(self, shape: tuple) -> tuple:
        if self.noise_shape is None:
            return shape
        owner = f"Dropout '{self.name}'"
        if len(self.noise_shape) != len(shape):
            raise ValueError(
                f"{owner}: `noise_shape` {self.noise_shape} has {len(self.noise_shape)} entries "
                f"but the input has {len(shape)} axes (shape {_checks.shape_str(shape)}); give "
                f"one entry per axis."
            )
        resolved = tuple(s if n is None else n for n, s in zip(self.noise_shape, shape))
        for n, s in zip(resolved, shape):
            if n not in (1, s):
                raise ValueError(
                    f"{owner}: `noise_shape` {self.noise_shape} does not broadcast to the input "
                    f"shape {_checks.shape_str(shape)}; each entry must be 1, None or the input's "
                    f"size on that axis."
                )
        return resolved

    def call(self, inputs: np.ndarray, training: Any = False) -> np.ndarray:
        if not training or self.rate == 0:
            return inputs
        if self.rate == 1:
            return np.zeros_like(inputs)
        keep_prob = 1.0 - self.rate
        keep = self._rng.random(self._mask_shape(inputs.shape)) < keep_prob   # noise_shape
        scaled = (inputs / keep_prob).astype(inputs.dtype)
        return np.where(keep, scaled, inputs.dtype.type(0))                   # like inputs

    # ---------------------------------------------------------------- backward (training)

    def forward_train(self, inputs: Any, training: Any = True) -> tuple[np.ndarray, dict]:
        """Inverted dropout, keeping its mask for `backward`: `y = x * keep / (1 - rate)`."""
        x = _checks.as_float_array(inputs, "inputs", f"Dropout '{self.name}'", np.dtype(self.dtype))
        if not training or self.rate == 0:
            return x, {"scale": None}
        if self.rate == 1:
            scale = np.zeros_like(x)
        else:
            keep = self._rng.random(self._mask_shape(x.shape)) < 1.0 - self.rate
            scale = np.where(keep, x.dtype.type(1.0 / (1.0 - self.rate)), x.dtype.type(0))
        return x * scale, {"scale": scale}                                     # like inputs

    def backward(self, cache: dict, d_y: np.ndarray, grads: Any) -> np.ndarray:
        """The same mask and scale, applied to the gradient."""
        return d_y if cache["scale"] is None else d_y * cache["scale"]

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return _shape_tuple(input_shape, "Dropout.compute_output_shape")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed, noise_shape=self.noise_shape)
        return config

    def __repr__(self) -> str:
        extra = f", noise_shape={self.noise_shape}" if self.noise_shape is not None else ""
        return f"Dropout(rate={self.rate}{extra})"
