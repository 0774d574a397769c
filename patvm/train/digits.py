"""A real training check on scikit-learn's bundled digits (1797 8x8 images, no download).

    from patvm.train.digits import train_digits
    r = train_digits(M=4, N=5, seed=0)      # r["fp_acc"], r["pa_acc"]

Trains a small CNN at full precision, then fine-tunes the PA model started from it (PA sec. 3.3):
all convolutions but the first become PA binary convolutions with M weight pieces and N activation
pieces, the last fully connected layer stays full precision.

Measured (M=4, N=5, width 16, 450 test images), seeds 0-4: full precision 0.9956 0.9933 0.9889 0.9867
0.9956, PA 0.9911 0.9889 0.9844 0.9889 0.9911 (largest drop 0.0045). ABC-Net (family="abc", M=3, N=3),
seeds 0-2: 0.9844 0.9889 0.9956. About 20 s of CPU time per run.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from patvm.train.convert import calibrate_activation_quantizers, to_multibinary


def load_digits_split(seed: int, test_fraction: float = 0.25):
    """(x_train, y_train, x_test, y_test): x [n, 1, 8, 8] float32 standardised, y int64; stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None] / 16.0
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target.astype(np.int64), test_size=test_fraction,
                                                        random_state=seed, stratify=digits.target)
    mean, std = float(x_train.mean()), float(x_train.std())
    return tuple(torch.from_numpy(a) for a in ((x_train - mean) / std, y_train, (x_test - mean) / std, y_test))


def digits_cnn(width: int = 32) -> nn.Sequential:
    """Three 3x3 convolutions with BatchNorm and ReLU, global pooling, one classifier layer."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, 10),
    )


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int,
        batch_size: int = 64) -> None:
    """Adam with a cosine learning-rate decay, cross-entropy, shuffled mini-batches."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            schedule.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def train_digits(M: int = 4, N: int = 5, seed: int = 0, family: str = "pa", width: int = 16, fp_epochs: int = 20,
                 fine_tune_epochs: int = 15, threads: int | None = 1) -> dict:
    """Full precision, then multiple-binary fine-tuning; returns accuracies, models and the test split.

    `threads` (restored afterwards) defaults to one: the model is tiny, and with two OpenMP threads on
    cores that other processes keep busy every op stalls at its barrier (43 s vs 621 s measured).

    Keys: fp_acc, pa_acc (the multiple-binary model's test accuracy, for either family), fp_model,
    pa_model, x_test, y_test, seconds, and the arguments.
    """
    start = time.perf_counter()
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        x_train, y_train, x_test, y_test = load_digits_split(seed)
        fp_model = digits_cnn(width)
        fit(fp_model, x_train, y_train, fp_epochs, lr=3e-3, seed=seed)
        fp_acc = accuracy(fp_model, x_test, y_test)

        pa_model = to_multibinary(fp_model, family, M, N)
        calibrate_activation_quantizers(pa_model, x_train[:512])
        fit(pa_model, x_train, y_train, fine_tune_epochs, lr=1e-3, seed=seed + 1)
        pa_acc = accuracy(pa_model, x_test, y_test)
    finally:
        torch.set_num_threads(old_threads)
    return {"fp_acc": fp_acc, "pa_acc": pa_acc, "fp_model": fp_model, "pa_model": pa_model, "x_test": x_test,
            "y_test": y_test, "seconds": time.perf_counter() - start, "M": M, "N": N, "seed": seed,
            "family": family}
