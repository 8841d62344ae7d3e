"""The differentiable ops, one definition each (forward and backward together), grouped by kind:
``arith`` (+ - * / ** @, comparisons), ``pointwise`` (exp, log, activations, softmax), ``reduce`` (sum, max,
...), ``shape`` (views, indexing, cat, gather ...). ``gpunn.ops.methods`` binds them as Tensor methods;
``gpunn.*`` and ``gpunn.nn.functional`` re-export the same functions."""
