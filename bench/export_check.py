"""Loads a `subnet model export` into plain PyTorch modules and checks its held-out loss.

    python bench/export_check.py MODEL.safetensors

reads MODEL.json (the config the export writes beside the model) and MODEL.heldout.safetensors
(written by `subnet model export --heldout`), builds the module the config names with
`load_state_dict(strict=True)`, and computes the mean loss over the held-out batches. It must
match the loss the subnet measured (the config's `heldout_loss`) to 1e-4. Not run in CI: PyTorch
lives in the local virtual environment bench/run.sh makes (.venv-bench).
"""

import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


class Block(nn.Module):
    """Pre-LayerNorm: causal self-attention from one fused [q; k; v] projection, then a GELU MLP."""

    def __init__(self, d, heads, mlp_ratio, eps):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.mlp_norm = nn.LayerNorm(d, eps=eps)
        self.mlp_up = nn.Linear(d, mlp_ratio * d)
        self.mlp_down = nn.Linear(mlp_ratio * d, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        dh = d // self.heads
        q, k, v = self.qkv(self.attn_norm(x)).split(d, dim=2)
        q, k, v = (y.reshape(b, t, self.heads, dh).transpose(1, 2) for y in (q, k, v))
        scores = q @ k.transpose(2, 3) / math.sqrt(dh) + mask
        attended = (scores.softmax(dim=3) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.attn_out(attended)
        return x + self.mlp_down(F.gelu(self.mlp_up(self.mlp_norm(x))))


class Transformer(nn.Module):
    """Decoder-only: token and learned position embeddings, blocks, a final LayerNorm, untied head."""

    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.token_embedding = nn.Embedding(c["vocab"], d)
        self.position_embedding = nn.Embedding(c["seq_len"], d)
        self.blocks = nn.ModuleList(
            Block(d, c["n_heads"], c["mlp_ratio"], c["layer_norm_eps"]) for _ in range(c["n_layers"])
        )
        self.final_norm = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.head = nn.Linear(d, c["vocab"])

    def forward(self, tokens):
        t = tokens.shape[1]
        upper = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        mask = torch.zeros(t, t).masked_fill(upper, -1e9)
        x = self.token_embedding(tokens) + self.position_embedding(torch.arange(t))
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.final_norm(x))

    def loss(self, inputs, targets):
        logits = self(inputs.long())
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.long().reshape(-1))


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        widths = [c["inputs"], *c["hidden"], c["classes"]]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = F.relu(x)
        return x

    def loss(self, inputs, targets):
        return F.cross_entropy(self(inputs), targets.long().reshape(-1))


def main():
    model_path = Path(sys.argv[1])
    config = json.loads(model_path.with_suffix(".json").read_text())
    module = {"transformer": Transformer, "mlp": Mlp}[config["architecture"]](config)
    module.load_state_dict(load_file(str(model_path)), strict=True)
    module.eval()
    heldout = load_file(str(model_path.with_suffix(".heldout.safetensors")))
    batches = sorted({int(k.split(".")[1]) for k in heldout})
    with torch.no_grad():
        losses = [
            module.loss(heldout[f"batch.{i}.inputs"], heldout[f"batch.{i}.targets"]).item()
            for i in batches
        ]
    loss = sum(losses) / len(losses)
    difference = abs(loss - config["heldout_loss"])
    print(
        json.dumps(
            {
                "task": config["task"],
                "window": config["window"],
                "pytorch_loss": loss,
                "subnet_loss": config["heldout_loss"],
                "difference": difference,
            }
        )
    )
    if difference > 1e-4:
        sys.exit(f"PyTorch's held-out loss differs from the subnet's by {difference:.2e} (> 1e-4)")


if __name__ == "__main__":
    main()
