"""runner.infer_finetune: auto (early stopping on held-out seed rows) against a plain computation."""
import numpy as np
import paddle
import pytest
from sklearn.metrics import log_loss, roc_auc_score

import infer
from conftest import random_inputs
from dygraph_model import DygraphModel
from metaheac.early_stopping import stratified_holdout
from metaheac.reference import full_model_fine_tune
from test_maml import make_net, tensors

SEED_ROWS, BATCH, MAX_STEPS, PATIENCE, AID = 60, 16, 14, 3, 7


def auto_config(**more):
    return {"hyper_parameters.batch_size": 1024, "runner.infer_batch_size": BATCH,
            "runner.infer_finetune": "auto", "runner.infer_holdout_fraction": 0.25,
            "runner.infer_max_steps": MAX_STEPS, "runner.infer_patience": PATIENCE,
            "runner.infer_min_holdout_positives": 2, "runner.seed": 3,
            "hyper_parameters.optimizer.local_test_learning_rate": 0.05, **more}


@pytest.fixture
def campaign():
    rng = np.random.default_rng(12)
    seed_x, candidate_x = random_inputs(rng, SEED_ROWS), random_inputs(rng, 30)
    seed_y = (rng.random(SEED_ROWS) < 0.3).astype("float32")
    candidate_y = (rng.random(30) < 0.3).astype("float32")
    return seed_x, seed_y, candidate_x, candidate_y


def full_model(model, config):
    copy = make_net()
    copy.set_state_dict(model.state_dict())
    return copy, DygraphModel().create_optimizer(copy, config, mode="infer")


def predict(model, inputs):
    with paddle.no_grad():
        return model(*tensors(inputs)).numpy()


def plain_early_stopping(model, config, seed_x, seed_y):
    """The full model, one Adam step at a time on the rows outside the holdout (batches of
    BATCH, in order, repeated); the held-out log loss after each (interval 1: the holdout
    fits one batch). Returns the best step, its held-out AUC, and the full model at every step."""
    held = stratified_holdout(seed_y, 0.25, 3, AID)
    fit_x, check_x = [x[~held] for x in seed_x], [x[held] for x in seed_x]
    fit_y, check_y = seed_y[~held], seed_y[held]
    copy, optimizer = full_model(model, config)
    batches = [slice(s, s + BATCH) for s in range(0, len(fit_y), BATCH)]
    losses, aucs, states = [], [], []
    for step in range(MAX_STEPS + 1):
        if step:
            rows = batches[(step - 1) % len(batches)]
            full_model_fine_tune(copy, optimizer, [x[rows] for x in fit_x], fit_y[rows], 1, BATCH)
        scores = predict(copy, check_x)
        losses.append(log_loss(check_y, scores.astype(np.float64), labels=[0, 1]))
        aucs.append(roc_auc_score(check_y, scores))
        states.append({k: v.numpy().copy() for k, v in copy.state_dict().items()})
        best = int(np.argmin(losses))
        if step - best >= PATIENCE:
            break
    return best, aucs[best], states[best]


def test_auto_stops_at_the_best_held_out_step_and_scores_with_its_weights(campaign):
    seed_x, seed_y, candidate_x, candidate_y = campaign
    model, config = make_net(), auto_config()
    best, best_auc, state = plain_early_stopping(model, config, seed_x, seed_y)
    assert 0 < best < MAX_STEPS  # the run stops early, at a step that fine-tuned something
    scores, done = infer.adapt_and_score(DygraphModel(), model, config, seed_x, seed_y,
                                         candidate_x, candidate_y, aid=AID)
    assert done["finetune"] == "auto" and done["finetune_steps"] == best
    assert done["validation_auc"] == pytest.approx(best_auc, abs=1e-6)
    expected_model = make_net()
    expected_model.set_state_dict(state)
    np.testing.assert_allclose(scores, predict(expected_model, candidate_x), rtol=1e-5, atol=1e-6)
    again, _ = infer.adapt_and_score(DygraphModel(), model, config, seed_x, seed_y,
                                     candidate_x, candidate_y, aid=AID)
    np.testing.assert_array_equal(scores, again)  # deterministic


def test_auto_refit_fine_tunes_all_seed_rows_for_the_chosen_steps(campaign):
    seed_x, seed_y, candidate_x, candidate_y = campaign
    model, config = make_net(), auto_config(**{"runner.infer_auto_refit": True})
    best, _, _ = plain_early_stopping(model, config, seed_x, seed_y)
    scores, done = infer.adapt_and_score(DygraphModel(), model, config, seed_x, seed_y,
                                         candidate_x, candidate_y, aid=AID)
    assert done["finetune"] == "auto refit" and done["finetune_steps"] == best
    copy, optimizer = full_model(model, config)
    batches = [slice(s, s + BATCH) for s in range(0, SEED_ROWS, BATCH)]
    for step in range(best):
        rows = batches[step % len(batches)]
        full_model_fine_tune(copy, optimizer, [x[rows] for x in seed_x], seed_y[rows], 1, BATCH)
    np.testing.assert_allclose(scores, predict(copy, candidate_x), rtol=1e-5, atol=1e-6)


def test_too_few_held_out_positives_fall_back_to_the_fixed_schedule(campaign):
    seed_x, seed_y, candidate_x, candidate_y = campaign
    model = make_net()
    config = auto_config(**{"runner.infer_min_holdout_positives": 1000, "runner.infer_train_epoch": 2})
    scores, done = infer.adapt_and_score(DygraphModel(), model, config, seed_x, seed_y,
                                         candidate_x, candidate_y, aid=AID)
    held_positives = int(seed_y[stratified_holdout(seed_y, 0.25, 3, AID)].sum())
    assert done["finetune"] == ("fixed (fallback: %d held-out positives, below "
                                "infer_min_holdout_positives 1000)" % held_positives)
    assert done["finetune_steps"] == 2 * -(-SEED_ROWS // BATCH) and np.isnan(done["validation_auc"])
    copy, optimizer = full_model(model, config)
    full_model_fine_tune(copy, optimizer, seed_x, seed_y, 2, BATCH)  # infer_batch_size rows a step
    np.testing.assert_allclose(scores, predict(copy, candidate_x), rtol=1e-5, atol=1e-6)
