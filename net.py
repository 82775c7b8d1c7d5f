"""The MetaHeac network: hybrid experts and critics over user and campaign embeddings.

The forward pass is functional: every weight is looked up by parameter name in a
``weights`` dict, which defaults to the layer's own parameters. The MAML inner loop
passes adapted ("fast") weights in that dict instead of storing them on the
parameters, so no state survives a step. In place of the full embedding tables the
dict may hold one task-local table, ``LOCAL_TABLE``: the rows of every table that
a batch uses, stacked, with the batch's ids remapped to index it (see
``maml.localize``). ``lookup(ids, table)`` indexes the tables; second-order MAML
passes one built from ops with a second derivative, which Paddle's embedding op
lacks (see ``maml.second_order_step``).

Inputs are four integer tensors of batch size B: static ids ``B x 7``, sequence
ids ``B x 50`` (the fields side by side, widths from the schema), sequence lengths
``B x 7`` and ad ids ``B x 6``. The output is the click probability, ``B``.
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from metaheac import fused_lookup, schema

LOCAL_TABLE = "local_table"
# The experts' first layer laid out for one product, in_dim x (experts * width): a
# weights dict may hold it in place of "expert_w0" (see ``with_first_layer_laid_out``).
FIRST_LAYER = "expert_w0_by_input"
# The gates and the critics: what hyper_parameters.inner_params "gates_critics" adapts.
GATE_AND_CRITIC_PREFIXES = ("expert_gate_", "critic_gate_", "critic_w", "critic_b")

# The id columns side by side: static (7), sequence (50), ad (6). FIELD_COLUMNS
# holds each embedding table's columns of it, in table order (static, sequence, ad).
N_STATIC = len(schema.STATIC_FIELDS)
N_SEQUENCE = len(schema.SEQUENCE_FIELDS)
_SEQUENCE_START = N_STATIC
_AD_START = _SEQUENCE_START + schema.SEQUENCE_TOTAL_WIDTH
FIELD_COLUMNS = (
    [slice(i, i + 1) for i in range(N_STATIC)]
    + [slice(_SEQUENCE_START + s.start, _SEQUENCE_START + s.stop) for s in schema.SEQUENCE_SLICES]
    + [slice(_AD_START + i, _AD_START + i + 1) for i in range(len(schema.AD_FIELDS))])
ID_COLUMNS = schema.ID_COLUMNS

# Sequence pooling as a matrix: column c of the sequence block belongs to field
# SEQUENCE_FIELD_OF[c], at position SEQUENCE_POSITION[c] within it.
SEQUENCE_FIELD_OF = np.repeat(np.arange(N_SEQUENCE), schema.SEQUENCE_WIDTHS)
SEQUENCE_POSITION = np.concatenate([np.arange(w) for w in schema.SEQUENCE_WIDTHS])


def packed_ids(static_ids, sequence_ids, ad_ids):
    """The id columns side by side (NumPy or Paddle), as FIELD_COLUMNS indexes them."""
    if isinstance(static_ids, np.ndarray):
        return np.concatenate([static_ids, sequence_ids, ad_ids], axis=-1)
    return paddle.concat([static_ids, sequence_ids, ad_ids], axis=-1)


def split_ids(ids):
    """The inverse of ``packed_ids``: (static, sequence, ad) ids."""
    return ids[..., :_SEQUENCE_START], ids[..., _SEQUENCE_START:_AD_START], ids[..., _AD_START:]


def table_sizes(max_idxs):
    """Rows of each embedding table, in table order, from ``hyper_parameters.max_idxs``."""
    return [max_id + 1 for group in max_idxs for max_id in group]


def pooling_matrix(lengths, dtype):
    """B x 7 x 50: row i averages the first lengths[:, i] columns of sequence field i
    (padding after the length is ignored; an empty sequence pools to zeros)."""
    field_of, position, owner = _pooling_constants(dtype)
    per_column = paddle.gather(lengths.astype(dtype), field_of, axis=1)  # B x 50
    weight = (position < per_column).astype(dtype) / paddle.clip(per_column, min=1.0)
    return weight.unsqueeze(1) * owner


_POOLING_CONSTANTS = {}


def _pooling_constants(dtype):
    """The sequence columns' fields and positions, and the 7 x 50 field-ownership
    matrix, as tensors: made once per device and dtype, not copied to the device on
    every forward pass (a program being traced for export makes its own)."""
    if not paddle.in_dynamic_mode():
        return _make_pooling_constants(dtype)
    key = (paddle.get_device(), str(dtype))
    if key not in _POOLING_CONSTANTS:
        _POOLING_CONSTANTS[key] = _make_pooling_constants(dtype)
    return _POOLING_CONSTANTS[key]


def _make_pooling_constants(dtype):
    return (paddle.to_tensor(SEQUENCE_FIELD_OF),
            paddle.to_tensor(SEQUENCE_POSITION).astype(dtype),
            paddle.to_tensor(np.eye(N_SEQUENCE)[:, SEQUENCE_FIELD_OF]).astype(dtype))


def first_layer_by_input(expert_w0):
    """The experts' first layer, K x in x H, as one in x KH matrix (a copy: the
    transposed order is not a view)."""
    k, fan_in, width = expert_w0.shape
    return expert_w0.transpose([1, 0, 2]).reshape([fan_in, k * width])


def with_first_layer_laid_out(weights):
    """`weights` with ``FIRST_LAYER`` in place of "expert_w0": the same network, whose
    forward passes then skip laying the layer out. The meta-step lays it out once for
    all its tasks and passes; an SGD step on it is the same step on "expert_w0"."""
    laid_out = {name: value for name, value in weights.items() if name != "expert_w0"}
    laid_out[FIRST_LAYER] = first_layer_by_input(weights["expert_w0"])
    return laid_out


def _xavier(fan_in, fan_out):
    # The initialiser nn.Linear uses, for weights stored stacked.
    return paddle.ParamAttr(
        initializer=nn.initializer.XavierUniform(fan_in=fan_in, fan_out=fan_out))


class MetaHeacNet(nn.Layer):
    def __init__(self, max_idxs, embed_dim, mlp_dims, num_expert, num_output):
        super().__init__()
        expected = [N_STATIC, N_SEQUENCE, len(schema.AD_FIELDS)]
        if [len(group) for group in max_idxs] != expected:
            raise ValueError(
                "hyper_parameters.max_idxs must be [static, sequence, ad] lists of %s max ids, "
                "got lists of %s" % (expected, [len(group) for group in max_idxs]))
        self.embed_dim = embed_dim
        self.num_expert = num_expert
        self.num_output = num_output
        self.static_tables, self.sequence_tables, self.ad_tables = (
            nn.LayerList([nn.Embedding(rows, embed_dim) for rows in table_sizes([group])])
            for group in max_idxs)

        self.user_dim = schema.USER_FIELDS * embed_dim
        # Gates see the mean user embedding next to the ad field embeddings.
        self.gate_dim = (1 + len(max_idxs[2])) * embed_dim
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
        # The first layer's gradient comes back through a transposed view (see
        # first_layer_by_input), strided; data-parallel runs all-reduce gradients as
        # flat memory, so it is made contiguous before it reaches the parameter.
        self.expert_w0.register_hook(lambda grad: grad.contiguous())
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

    def table_sizes(self):
        return [self.weights()[name].shape[0] for name in self.table_names()]

    def weights(self):
        return dict(self.named_parameters())

    def gate_and_critic_names(self):
        """Names of the gates' and the critics' weights (not the tables, not the experts)."""
        return [name for name in self.weights() if name.startswith(GATE_AND_CRITIC_PREFIXES)]

    def forward(self, static_ids, sequence_ids, sequence_lengths, ad_ids, weights=None,
                lookup=None):
        w = self.weights() if weights is None else weights
        inputs = (static_ids, sequence_ids, sequence_lengths, ad_ids)
        if LOCAL_TABLE in w and lookup is None and fused_lookup.applies(w[LOCAL_TABLE], inputs):
            return self.head(*fused_lookup.lookup(w[LOCAL_TABLE], *inputs), w)
        # lookup defaults here, not in the signature: paddle.jit.save's program translator
        # cannot resolve a module attribute as a default value.
        lookup = F.embedding if lookup is None else lookup
        if LOCAL_TABLE in w:
            static, sequence, ad = [lookup(ids, w[LOCAL_TABLE])
                                    for ids in (static_ids, sequence_ids, ad_ids)]
        else:
            # Each group's tables side by side: B x 7 x E, B x 50 x E, B x 6 x E.
            ids = packed_ids(static_ids, sequence_ids, ad_ids)
            per_table = [lookup(ids[:, cols], w[name])
                         for name, cols in zip(self.table_names(), FIELD_COLUMNS)]
            n_static, n_user = N_STATIC, N_STATIC + N_SEQUENCE
            static, sequence, ad = [paddle.concat(tables, axis=1) for tables in (
                per_table[:n_static], per_table[n_static:n_user], per_table[n_user:])]
        pooled = paddle.matmul(pooling_matrix(sequence_lengths, sequence.dtype), sequence)
        return self.head(paddle.concat([static, pooled], axis=1), ad, w)

    def head(self, user, ad, w):
        """Click probability from the embedded fields: the user's, B x 14 x E (static,
        then each sequence field's mean), and the ad's, B x 6 x E."""
        batch = user.shape[0]
        # The mean over the 14 fields as B products of 1 x 14 by 14 x E: mean's own
        # backward broadcasts, which is slower on the CPU.
        fields = user.shape[1]
        field_mean = paddle.matmul(paddle.full([1, fields], 1.0 / fields, user.dtype), user)
        gate_input = paddle.concat([field_mean, ad], axis=1)             # B x 7 x E
        # reshape rather than flatten: flatten has no second derivative in Paddle.
        gate_input = gate_input.reshape([batch, -1])                    # B x 7E
        user = user.reshape([batch, -1])                                # B x 14E

        expert_gate = self._gate(gate_input, w, "expert_gate")          # B x K
        # The first layer of all experts as one B x 14E by 14E x KH product, B x K x H;
        # expert-major, K x B x H, for the batched products of any deeper layers.
        first_w = w[FIRST_LAYER] if FIRST_LAYER in w else first_layer_by_input(w["expert_w0"])
        first_b = w["expert_b0"]
        k, width = first_b.shape[0], first_b.shape[2]
        hidden = F.relu(paddle.matmul(user, first_w) + first_b.reshape([-1]))
        hidden = hidden.reshape([batch, k, width])
        if self.expert_depth > 1:
            hidden = hidden.transpose([1, 0, 2])
            for depth in range(1, self.expert_depth):
                hidden = F.relu(paddle.matmul(hidden, w["expert_w%d" % depth])
                                + w["expert_b%d" % depth])
            hidden = hidden.transpose([1, 0, 2])
        # The gate's mixture as B products of 1 x K by K x H: faster on the CPU than a
        # broadcast multiply and a sum over the expert axis, forward and backward.
        mixed = paddle.matmul(expert_gate.unsqueeze(1), hidden).squeeze(1)  # B x H

        critic_gate = self._gate(gate_input, w, "critic_gate")          # B x C
        critics = F.sigmoid(paddle.matmul(mixed, w["critic_w"]) + w["critic_b"])
        return (critic_gate * critics).sum(axis=1)

    @staticmethod
    def _gate(gate_input, w, prefix):
        hidden = F.relu(F.linear(gate_input, w[prefix + "_hidden.weight"], w[prefix + "_hidden.bias"]))
        return F.softmax(F.linear(hidden, w[prefix + "_out.weight"], w[prefix + "_out.bias"]), axis=-1)
