"""ResNet for small images, CIFAR-style (He et al. 2016, section 4.2): depth = 6n + 2.

Three stages of ``n`` basic blocks each (3x3 conv, BatchNorm, ReLU, twice, plus the identity or a
1x1 projection shortcut); the stages halve the resolution and double the width.
"""

from __future__ import annotations

from ember import nn

__all__ = ["BasicBlock", "ResNet"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))  # (N, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet.

    Args:
        depth: 6n + 2 (8, 14, 20, 32, ...).
        in_channels: image channels (1 for Fashion-MNIST).
        num_classes: number of output logits.
        widths: channels of the three stages.

    Shape:
        input (N, in_channels, H, W); output (N, num_classes).

    Example:
        >>> import ember
        >>> ResNet(depth=8)(ember.zeros(2, 1, 28, 28)).shape
        ember.Size([2, 10])
    """

    def __init__(self, depth: int = 8, in_channels: int = 1, num_classes: int = 10, widths: tuple = (16, 32, 64)):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks = []
        width = widths[0]
        for stage, w in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(width, w, stride))
                width = w
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.layers(self.stem(x))  # (N, C, H/4, W/4)
        return self.fc(self.pool(x).flatten(1))
