"""An independent NumPy formulation of the MetaHeac forward pass, for tests.

Written from the paper's description (experts and critics as separate MLPs and
linear heads, looped one by one) rather than from net.py's batched layout.
"""
import numpy as np

from metaheac import schema


def relu(x):
    return np.maximum(x, 0.0)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def forward(params, static, sequence, lengths, ad):
    """`params`: name -> float64 array, as in MetaHeacNet.state_dict()."""
    p = params
    user_fields = []
    for i in range(static.shape[1]):
        user_fields.append(p["static_tables.%d.weight" % i][static[:, i]])
    for i, field in enumerate(schema.SEQUENCE_FIELDS):
        start = sum(schema.SEQUENCE_WIDTHS[:i])
        table = p["sequence_tables.%d.weight" % i]
        pooled = np.zeros((len(static), table.shape[1]))
        for row in range(len(static)):
            n = lengths[row, i]
            if n:
                pooled[row] = table[sequence[row, start:start + n]].mean(axis=0)
        user_fields.append(pooled)
    ad_fields = [p["ad_tables.%d.weight" % i][ad[:, i]] for i in range(ad.shape[1])]
    user = np.concatenate(user_fields, axis=1)
    gate_input = np.concatenate([np.mean(user_fields, axis=0)] + ad_fields, axis=1)

    def gate(prefix):
        h = relu(gate_input @ p[prefix + "_hidden.weight"] + p[prefix + "_hidden.bias"])
        return softmax(h @ p[prefix + "_out.weight"] + p[prefix + "_out.bias"])

    expert_gate = gate("expert_gate")
    num_expert = expert_gate.shape[1]
    depth = sum(1 for name in p if name.startswith("expert_w"))
    mixed = 0.0
    for k in range(num_expert):
        h = user
        for d in range(depth):
            h = relu(h @ p["expert_w%d" % d][k] + p["expert_b%d" % d][k, 0])
        mixed = mixed + expert_gate[:, k:k + 1] * h
    critic_gate = gate("critic_gate")
    out = 0.0
    for c in range(critic_gate.shape[1]):
        critic = sigmoid(mixed @ p["critic_w"][:, c] + p["critic_b"][c])
        out = out + critic_gate[:, c] * critic
    return out
