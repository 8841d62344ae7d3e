"""bench.cnn_profile's per-primitive timer: a primitive called inside another is part of the outer one."""

from bench import cnn_profile


def test_a_primitive_called_inside_another_is_counted_once(monkeypatch):
    class Be:  # as the cupy backend: conv2d_forward runs linear_act (its GEMM)
        def linear_act(self):
            return 1

        def conv2d_forward(self):
            return self.linear_act() + 1

    wall, cpu, calls = {}, {}, {}
    for d in (wall, cpu):
        d.update(linear_act=0.0, conv2d_forward=0.0)
    calls.update(linear_act=0, conv2d_forward=0)
    syncs = []
    for name in ("linear_act", "conv2d_forward"):
        cnn_profile._timed(Be, name, wall, cpu, calls, lambda: syncs.append(1))
    be = Be()
    assert be.conv2d_forward() == 2 and be.linear_act() == 1
    assert calls == {"linear_act": 1, "conv2d_forward": 1}  # the conv's inner GEMM is not a second linear_act
    assert len(syncs) == 4 and cnn_profile._DEPTH == [0]
