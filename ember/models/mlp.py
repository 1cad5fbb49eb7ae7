"""A multi-layer perceptron for flattened images."""

from __future__ import annotations

from ember import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Flatten, then ``Linear -> [BatchNorm1d] -> ReLU -> Dropout`` per hidden layer, then a linear classifier.

    Args:
        in_features: input size after flattening (784 for 28x28 images).
        hidden: sizes of the hidden layers.
        num_classes: number of output logits.
        dropout: dropout probability after each hidden layer.
        batch_norm: normalize each hidden layer's pre-activations (faster, steadier training).

    Shape:
        input (N, *) with prod(*) == in_features; output (N, num_classes).

    Example:
        >>> import ember
        >>> MLP()(ember.zeros(2, 1, 28, 28)).shape
        ember.Size([2, 10])
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: tuple = (256, 128),
        num_classes: int = 10,
        dropout: float = 0.1,
        batch_norm: bool = False,
    ):
        super().__init__()
        layers: list = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
