"""The one description of the Look-alike data: column names, widths and vocabularies.

Readers, the network, the data generator and the validators all read these facts
from here. Ids of a field run from 0 to ``max_id`` inclusive, so a field's
embedding table has ``max_id + 1`` rows (the authors' convention).
"""
from dataclasses import dataclass

LABEL = "label"
AID = "aid"
# The user id: optional in every data file (absent, the DataFrame index stands for it);
# what an audience lists, so it must be unique within a campaign's rows.
UID = "uid"


@dataclass(frozen=True)
class Field:
    name: str
    max_id: int
    width: int = 1  # cells per row; > 1 only for sequence fields

    @property
    def vocab_size(self):
        return self.max_id + 1

    @property
    def length_column(self):
        return self.name + "_length"


# User profile: one id per row.
STATIC_FIELDS = (
    Field("carrier", 3),
    Field("consumptionAbility", 2),
    Field("LBS", 855),
    Field("age", 5),
    Field("education", 7),
    Field("gender", 2),
    Field("house", 1),
)

# User interests: up to `width` ids per row, padded after `<name>_length`.
SEQUENCE_FIELDS = (
    Field("interest1", 124, 10),
    Field("interest2", 82, 10),
    Field("interest3", 12, 10),
    Field("kw1", 263312, 5),
    Field("kw2", 49780, 5),
    Field("topic1", 10002, 5),
    Field("topic2", 9984, 5),
)

# Campaign (ad) description: one id per row, constant within an aid.
AD_FIELDS = (
    Field("advertiserId", 78),
    Field("campaignId", 137),
    Field("creativeSize", 14),
    Field("adCategoryId", 39),
    Field("productId", 32),
    Field("productType", 3),
)

STATIC_COLUMNS = [f.name for f in STATIC_FIELDS]
SEQUENCE_COLUMNS = [f.name for f in SEQUENCE_FIELDS]
LENGTH_COLUMNS = [f.length_column for f in SEQUENCE_FIELDS]
AD_COLUMNS = [f.name for f in AD_FIELDS]
SEQUENCE_WIDTHS = [f.width for f in SEQUENCE_FIELDS]
# Column ranges of each sequence field inside the concatenated (N, 50) id matrix.
SEQUENCE_SLICES = []
_start = 0
for _width in SEQUENCE_WIDTHS:
    SEQUENCE_SLICES.append(slice(_start, _start + _width))
    _start += _width
SEQUENCE_TOTAL_WIDTH = _start
# A row's id columns side by side (static, sequence, ad), and its user fields once each
# sequence is pooled to one embedding (static and sequence).
ID_COLUMNS = len(STATIC_FIELDS) + SEQUENCE_TOTAL_WIDTH + len(AD_FIELDS)
USER_FIELDS = len(STATIC_FIELDS) + len(SEQUENCE_FIELDS)

# Every column a data file must have, in the upstream order.
ALL_COLUMNS = [LABEL, AID] + STATIC_COLUMNS + SEQUENCE_COLUMNS + LENGTH_COLUMNS + AD_COLUMNS
# Columns a data file may have besides those.
OPTIONAL_COLUMNS = [UID]

# The upstream `hyper_parameters.max_idxs` layout: [static, sequence, ad].
DEFAULT_MAX_IDXS = [
    [f.max_id for f in STATIC_FIELDS],
    [f.max_id for f in SEQUENCE_FIELDS],
    [f.max_id for f in AD_FIELDS],
]

TRAIN_FILE = "train_stage1.pkl"
TEST_SEED_FILE = "test_stage1.pkl"
TEST_CANDIDATE_FILE = "test_stage2.pkl"
# Beside a generated test set's files: how well the true click probabilities rank its
# candidates (pooled AUC, GAUC), the best any model can do there.
ORACLE_FILE = "oracle.json"
