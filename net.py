"""The MetaHeac network: hybrid experts and critics over user and campaign embeddings.

The forward pass is functional: every weight is looked up by parameter name in a
``weights`` dict, which defaults to the layer's own parameters. The MAML inner loop
passes adapted ("fast") weights in that dict instead of storing them on the
parameters, so no state survives a step. An entry may also replace a full
embedding table by a task-local table of some of its rows, with the ids remapped
to index it (see ``maml.localize``). ``lookup(ids, table)`` indexes the tables;
second-order MAML passes one built from ops with a second derivative, which
Paddle's embedding op lacks (see ``maml.second_order_step``).

Inputs are four integer tensors of batch size B: static ids ``B x 7``, sequence
ids ``B x 50`` (the fields side by side, widths from the schema), sequence lengths
``B x 7`` and ad ids ``B x 6``. The output is the click probability, ``B``.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

import schema

# Which input tensor and which of its columns each embedding table reads, in
# table order (static, sequence, ad). Inputs: 0 static, 1 sequence, 2 lengths, 3 ad.
TABLE_INPUTS = (
    [(0, slice(i, i + 1)) for i in range(len(schema.STATIC_FIELDS))]
    + [(1, cols) for cols in schema.SEQUENCE_SLICES]
    + [(3, slice(i, i + 1)) for i in range(len(schema.AD_FIELDS))])


def _xavier(fan_in, fan_out):
    # The initialiser nn.Linear uses, for weights stored stacked.
    return paddle.ParamAttr(
        initializer=nn.initializer.XavierUniform(fan_in=fan_in, fan_out=fan_out))


class MetaHeacNet(nn.Layer):
    def __init__(self, max_idxs, embed_dim, mlp_dims, num_expert, num_output):
        super().__init__()
        expected = [len(schema.STATIC_FIELDS), len(schema.SEQUENCE_FIELDS), len(schema.AD_FIELDS)]
        if [len(group) for group in max_idxs] != expected:
            raise ValueError(
                "hyper_parameters.max_idxs must be [static, sequence, ad] lists of %s max ids, "
                "got lists of %s" % (expected, [len(group) for group in max_idxs]))
        static_max, sequence_max, ad_max = max_idxs
        self.embed_dim = embed_dim
        self.num_expert = num_expert
        self.num_output = num_output
        self.static_tables = nn.LayerList([nn.Embedding(m + 1, embed_dim) for m in static_max])
        self.sequence_tables = nn.LayerList([nn.Embedding(m + 1, embed_dim) for m in sequence_max])
        self.ad_tables = nn.LayerList([nn.Embedding(m + 1, embed_dim) for m in ad_max])

        user_fields = len(static_max) + len(sequence_max)
        self.user_dim = user_fields * embed_dim
        # Gates see the mean user embedding next to the ad field embeddings.
        self.gate_dim = (1 + len(ad_max)) * embed_dim
        hidden = mlp_dims[-1]

        # The experts' layers are stacked along a leading expert axis so all
        # experts run as one batched matrix product.
        self.expert_depth = len(mlp_dims)
        fan_in = self.user_dim
        for depth, width in enumerate(mlp_dims):
            setattr(self, "expert_w%d" % depth, self.create_parameter(
                [num_expert, fan_in, width], attr=_xavier(fan_in, width)))
            setattr(self, "expert_b%d" % depth, self.create_parameter(
                [num_expert, 1, width], is_bias=True))
            fan_in = width
        # Column j holds critic j, a Linear(hidden, 1).
        self.critic_w = self.create_parameter([hidden, num_output], attr=_xavier(hidden, 1))
        self.critic_b = self.create_parameter([num_output], is_bias=True)

        self.expert_gate_hidden = nn.Linear(self.gate_dim, hidden)
        self.expert_gate_out = nn.Linear(hidden, num_expert)
        self.critic_gate_hidden = nn.Linear(self.gate_dim, hidden)
        self.critic_gate_out = nn.Linear(hidden, num_output)

    def table_names(self):
        """Names of the embedding tables, in feature order: static, sequence, ad."""
        return ["%s.%d.weight" % (group, i)
                for group, count in (("static_tables", len(self.static_tables)),
                                     ("sequence_tables", len(self.sequence_tables)),
                                     ("ad_tables", len(self.ad_tables)))
                for i in range(count)]

    def weights(self):
        return dict(self.named_parameters())

    def forward(self, static_ids, sequence_ids, sequence_lengths, ad_ids, weights=None,
                lookup=F.embedding):
        w = self.weights() if weights is None else weights
        tables = [w[name] for name in self.table_names()]
        n_static = len(self.static_tables)
        n_sequence = len(self.sequence_tables)
        static_tables = tables[:n_static]
        sequence_tables = tables[n_static:n_static + n_sequence]
        ad_tables = tables[n_static + n_sequence:]

        static = [lookup(static_ids[:, i], t) for i, t in enumerate(static_tables)]
        lengths = sequence_lengths.astype("float32")
        sequence = [
            self._pooled(lookup(sequence_ids[:, cols], t), lengths[:, i])
            for i, (cols, t) in enumerate(zip(schema.SEQUENCE_SLICES, sequence_tables))]
        ad = [lookup(ad_ids[:, i], t) for i, t in enumerate(ad_tables)]

        user = paddle.stack(static + sequence, axis=1)             # B x 14 x E
        gate_input = paddle.concat(
            [user.mean(axis=1, keepdim=True), paddle.stack(ad, axis=1)], axis=1)
        # reshape rather than flatten: flatten has no second derivative in Paddle.
        gate_input = gate_input.reshape([gate_input.shape[0], -1])  # B x 7E
        user = user.reshape([user.shape[0], -1])                    # B x 14E

        expert_gate = self._gate(gate_input, w, "expert_gate")      # B x K
        hidden = user.unsqueeze(0)                                 # 1 x B x 14E
        for depth in range(self.expert_depth):
            hidden = F.relu(paddle.matmul(hidden, w["expert_w%d" % depth])
                            + w["expert_b%d" % depth])             # K x B x H
        mixed = (hidden * expert_gate.t().unsqueeze(-1)).sum(axis=0)  # B x H

        critic_gate = self._gate(gate_input, w, "critic_gate")      # B x C
        critics = F.sigmoid(paddle.matmul(mixed, w["critic_w"]) + w["critic_b"])
        return (critic_gate * critics).sum(axis=1)

    @staticmethod
    def _pooled(embedded, lengths):
        # Mean over the first `length` positions; padding after it is masked out
        # and an empty sequence pools to zeros.
        positions = paddle.arange(embedded.shape[1], dtype="float32")
        mask = (positions < lengths.unsqueeze(1)).astype(embedded.dtype)
        total = (embedded * mask.unsqueeze(-1)).sum(axis=1)
        return total / paddle.clip(lengths, min=1.0).unsqueeze(1)

    @staticmethod
    def _gate(gate_input, w, prefix):
        hidden = F.relu(F.linear(gate_input, w[prefix + "_hidden.weight"], w[prefix + "_hidden.bias"]))
        return F.softmax(F.linear(hidden, w[prefix + "_out.weight"], w[prefix + "_out.bias"]), axis=-1)

