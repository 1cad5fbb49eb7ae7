"""A character-level LSTM language model: embedding, stacked LSTM, linear read-out."""

from __future__ import annotations

from ember import nn

__all__ = ["LSTMLanguageModel"]


class LSTMLanguageModel(nn.Module):
    """Predicts the next token at every position.

    Args:
        vocab_size: number of distinct tokens.
        embed_dim: embedding width.
        hidden_size: LSTM hidden width.
        num_layers: stacked LSTM layers.
        dropout: dropout between layers and before the read-out.

    Shape:
        input (B, T) token ids; output (B, T, vocab_size) logits.

    Example:
        >>> import ember
        >>> LSTMLanguageModel(vocab_size=20)(ember.zeros(2, 5, dtype=ember.long)).shape
        ember.Size([2, 5, 20])
    """

    def __init__(
        self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 256, num_layers: int = 2, dropout: float = 0.1
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(
            embed_dim, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx, state=None):
        x = self.embed(idx)  # (B, T, E)
        out, _ = self.lstm(x, state)  # (B, T, H)
        return self.head(self.drop(out))  # (B, T, V)
