"""BERT (2018): a bidirectional Transformer encoder pre-trained by masked language modelling.

J. Devlin, M.-W. Chang, K. Lee, K. Toutanova, "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding", NAACL 2019. https://arxiv.org/abs/1810.04805

Input: `[CLS] sentence A [SEP] sentence B [SEP]`. Each token's embedding is the sum of three lookups,
then a LayerNorm (section 3, fig. 2):

    h_0 = LN(E_token[w_t] + E_position[t] + E_segment[s_t])
    h_l = PostLN-TransformerLayer(h_{l-1}),   l = 1..L   (attention sees every position, both directions)

Pre-training has two heads on top of h_L:
- masked LM: 15% of positions are chosen; of those 80% become [MASK], 10% a random token, 10% stay;
  the loss is the cross-entropy of the original token at the chosen positions only. The output layer
  shares its weights with E_token: logits = LN(gelu(W h)) E_token^T + b.
- next sentence prediction: pooled = tanh(W_p h_L[CLS]); a 2-way classifier says whether B followed A
  (label 0) or is a random sentence from another document (label 1).

Fine-tuning puts one linear layer on the pooled [CLS] vector. Config field names follow Hugging Face's
`BertConfig`, so `zupu.hf.bert` maps checkpoints by key only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from zupu.nn import Block, FeedForward, MultiHeadAttention, activation, padding_mask

IGNORE = -100  # label value for positions that carry no loss (unmasked tokens), as in torch and HF


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    num_labels: int = 2  # classes of BertForSequenceClassification


class BertEmbeddings(nn.Module):
    """Token + position + segment embeddings, summed, then LayerNorm and dropout."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        t = input_ids.size(1)
        if t > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence of {t} tokens is longer than max_position_embeddings "
                             f"{self.position_embeddings.num_embeddings}; truncate the input")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        pos = torch.arange(t, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        return self.drop(self.LayerNorm(x))  # (B, T, C)


class Bert(nn.Module):
    """The encoder. `forward(input_ids, attention_mask)` returns the last hidden state (B, T, C);
    `pool(h)` gives tanh(W h[CLS]), the sentence vector the NSP and classification heads read."""

    config_class = BertConfig

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = c = config
        self.embeddings = BertEmbeddings(c)
        self.layers = nn.ModuleList(
            Block(c.hidden_size,
                  attn=MultiHeadAttention(c.hidden_size, c.num_attention_heads, dropout=c.attention_probs_dropout_prob),
                  mlp=FeedForward(c.hidden_size, c.intermediate_size, c.hidden_act),
                  norm=partial(nn.LayerNorm, eps=c.layer_norm_eps), pre_ln=False, dropout=c.hidden_dropout_prob)
            for _ in range(c.num_hidden_layers))
        # HF's masked-LM model has no pooler; every other head reads the pooled [CLS] vector
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size) if add_pooling_layer else None
        self.apply(lambda m: init_weights(m, c.initializer_range))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        mask = padding_mask(attention_mask) if attention_mask is not None else None  # (B, 1, 1, T)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pooler(h[:, 0]))  # (B, C) from the [CLS] position


def init_weights(m: nn.Module, std: float) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear | nn.Embedding):
        nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            nn.init.zeros_(m.weight[m.padding_idx])
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class MLMHead(nn.Module):
    """logits = LN(act(W h)) E_token^T + b; E_token is the encoder's token embedding, passed in (tied)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.act = activation(c.hidden_act)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))
        init_weights(self.dense, c.initializer_range)

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(h))) @ embedding.T + self.bias  # (B, T, V)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the masked positions only (labels are IGNORE elsewhere)."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


class BertForMaskedLM(nn.Module):
    """Encoder + tied masked-LM head; `forward` returns vocabulary logits (B, T, V)."""

    config_class = BertConfig

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = Bert(config, add_pooling_layer=type(self) is not BertForMaskedLM)
        self.mlm = MLMHead(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        h = self.bert(input_ids, attention_mask, token_type_ids)
        return self.mlm(h, self.bert.embeddings.word_embeddings.weight)


class BertForPreTraining(BertForMaskedLM):
    """Both pre-training heads: masked-LM logits (B, T, V) and next-sentence logits (B, 2)."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        init_weights(self.nsp, config.initializer_range)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.bert(input_ids, attention_mask, token_type_ids)
        return self.mlm(h, self.bert.embeddings.word_embeddings.weight), self.nsp(self.bert.pool(h))

    def loss(self, input_ids, attention_mask, token_type_ids, mlm_labels, nsp_labels) -> dict[str, torch.Tensor]:
        """Both losses and accuracies. Vocabulary logits are computed at the selected positions only (BERT's
        `gather_indexes`): the same loss as `masked_lm_loss` on the full (B, T, V) logits, for ~15% of the work."""
        h = self.bert(input_ids, attention_mask, token_type_ids)
        picked = mlm_labels != IGNORE  # (B, T)
        mlm_logits = self.mlm(h[picked], self.bert.embeddings.word_embeddings.weight)  # (selected, V)
        nsp_logits = self.nsp(self.bert.pool(h))  # (B, 2)
        mlm, nsp = F.cross_entropy(mlm_logits, mlm_labels[picked]), F.cross_entropy(nsp_logits, nsp_labels)
        return {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp,
                "mlm_acc": (mlm_logits.argmax(-1) == mlm_labels[picked]).float().mean(),
                "nsp_acc": (nsp_logits.argmax(-1) == nsp_labels).float().mean()}


class BertForSequenceClassification(nn.Module):
    """Fine-tuning head (section 4.1): logits = W drop(pool(h)), (B, num_labels)."""

    config_class = BertConfig

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = Bert(config)
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.drop(self.bert.pool(self.bert(input_ids, attention_mask, token_type_ids))))


class BertForMeanPooledClassification(BertForSequenceClassification):
    """Classes from the mean of the encoder's real-token outputs (Sentence-BERT's pooling) instead of the
    [CLS] pooler: logits (B, num_labels). `transformers` has no such head, so it saves as a zupu checkpoint."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(mean_pool(self.bert(input_ids, attention_mask), attention_mask)))


def mean_pool(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' vectors (Sentence-BERT's pooling): (B, T, C), (B, T) -> (B, C)."""
    m = attention_mask.to(h.dtype)[:, :, None]  # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


PRESETS = {
    "base": BertConfig(),  # BERT-base: 110M parameters
    "mini": BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "tiny": BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=37, max_position_embeddings=64),
}
