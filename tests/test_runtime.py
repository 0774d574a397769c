"""CompiledModel.run: inputs copied into preallocated tensors, outputs returned without a copy -- and still
never changed by a later run, also when the model returns a view of its input."""
import numpy as np

import patvm
from patvm.onnx_format import GraphWriter


def reshape_and_relu():
    """x [2, 3] -> (its reshape to [3, 2]: a view of the input, relu(x)), compiled for the host."""
    g = GraphWriter("views")
    x = g.input("x", [2, 3])
    g.output(g.node("Reshape", [x, g.constant(np.array([3, 2], np.int64), "shape")], "reshape"), [3, 2])
    g.output(g.relu(x), [2, 3], name="relu")
    return patvm.compile(g.model(), target="host")


def test_outputs_survive_later_runs_even_when_they_view_the_input():
    compiled = reshape_and_relu()
    first = compiled.run(np.arange(6, dtype=np.float32).reshape(2, 3) - 2)
    second = compiled.run(np.full((2, 3), 7, np.float32))
    np.testing.assert_array_equal(first[0].ravel(), np.arange(6) - 2)
    np.testing.assert_array_equal(first[1].ravel(), np.maximum(np.arange(6) - 2, 0))
    assert np.all(second[0] == 7) and np.all(second[1] == 7)


def aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A copy of `array` whose data starts at a multiple of `alignment` bytes."""
    buf = np.empty(array.nbytes + alignment, np.uint8)
    start = -buf.ctypes.data % alignment
    out = buf[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def test_aligned_inputs_are_read_in_place_and_buffers_can_be_filled():
    compiled = reshape_and_relu()
    values = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    caller = aligned(values)
    assert compiled._zero_copy(caller) is not None            # taken as it is, not copied
    assert compiled._zero_copy(aligned(np.zeros(7, np.float32))[1:]) is None    # 4 bytes off: copied
    reshaped, relu = compiled.run(caller)
    np.testing.assert_array_equal(relu, np.maximum(values, 0))
    # the reshape views the input: returned as a copy, so changing the caller's array leaves it alone
    assert not np.may_share_memory(reshaped, caller)
    caller[...] = 9
    np.testing.assert_array_equal(reshaped.ravel(), values.ravel())
    # fill the preallocated input, run without arguments: nothing is copied in
    (buffer,) = compiled.input_buffers()
    buffer[...] = values * 2
    np.testing.assert_array_equal(compiled.run()[1], np.maximum(values * 2, 0))
