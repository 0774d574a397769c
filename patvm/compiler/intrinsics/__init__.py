"""patvm's own TensorIntrins (micro-kernels that TVM's vectoriser does not produce by itself)."""
