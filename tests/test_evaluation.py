"""Feature extraction, weighted kNN (against a NumPy loop of Wu et al. 2018) and the linear probe."""

import numpy as np
import pytest

import keras
from sslzoo.evaluation import build_linear_head, extract_features, knn_predict, knn_top1, linear_probe


def knn_reference(train, train_labels, queries, num_classes, k, temperature):
    """InstDisc's weighted kNN, one query at a time, float64: cosine top-k, weights exp(s / T), class sums."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    predictions = []
    for query in queries:
        query = query / np.linalg.norm(query)
        similarities = train.astype(np.float64) @ query.astype(np.float64)
        neighbours = np.argsort(-similarities)[: min(k, len(train))]
        votes = np.zeros(num_classes)
        for i in neighbours:
            votes[train_labels[i]] += np.exp(similarities[i] / temperature)
        predictions.append(int(np.argmax(votes)))
    return np.array(predictions)


def gaussian_blobs(n, num_classes, dim, separation, seed):
    """Samples around class centers that are the same for every seed (they come from seed 1234)."""
    centers = np.random.default_rng(1234).normal(size=(num_classes, dim)) * separation
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    return (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels.astype(np.int32)


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (5, 0.07), (20, 0.5), (50, 0.1), (1000, 1.0)])
def test_knn_matches_numpy_reference(k, temperature):
    rng = np.random.default_rng(k)
    train = rng.normal(size=(300, 16)).astype(np.float32)
    train_labels = rng.integers(0, 5, 300)
    queries = rng.normal(size=(70, 16)).astype(np.float32)
    expected = knn_reference(train, train_labels, queries, 5, k, temperature)
    got = knn_predict(train, train_labels, queries, 5, k=k, temperature=temperature, batch_size=16)
    np.testing.assert_array_equal(got, expected)
    query_labels = rng.integers(0, 5, 70)
    assert knn_top1(train, train_labels, queries, query_labels, 5, k, temperature, 16) == pytest.approx(
        100.0 * np.mean(expected == query_labels))


def test_knn_one_hot_features_are_perfect_and_k1_returns_the_copied_point():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    features = np.eye(10)[labels] + 1e-3 * rng.normal(size=(500, 10))
    assert knn_top1(features[:400], labels[:400], features[400:], labels[400:], 10) == 100.0

    random_features = rng.normal(size=(200, 32)).astype(np.float32)
    random_labels = rng.integers(0, 7, 200)
    picked = [3, 50, 199]
    predictions = knn_predict(random_features, random_labels, random_features[picked], 7, k=1)
    np.testing.assert_array_equal(predictions, random_labels[picked])


def test_knn_temperature_weights_close_neighbours():
    # One very close class-0 neighbour against two farther class-1 neighbours (k = 3 = all of them): a sharp
    # temperature lets the close one win, a flat one lets the majority win. Cosine sims: 1.0 vs 0.878 twice.
    train = np.array([[1.0, 0.01], [np.cos(0.5), np.sin(0.5)], [np.cos(0.5), -np.sin(0.5)]], np.float32)
    labels = np.array([0, 1, 1])
    query = np.array([[1.0, 0.0]], np.float32)
    assert knn_predict(train, labels, query, 2, k=3, temperature=0.07)[0] == 0
    assert knn_predict(train, labels, query, 2, k=3, temperature=10.0)[0] == 1
    # A tiny temperature must not overflow exp(): exp(1 / 0.001) is inf in float32.
    assert knn_predict(train, labels, query, 2, k=3, temperature=1e-3)[0] == 0


def test_knn_edge_cases():
    train = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    labels = np.arange(10) % 3
    assert knn_top1(train, labels, np.zeros((0, 4), np.float32), np.zeros((0,)), 3) == 0.0
    assert knn_predict(train, labels, train, 3, k=200).shape == (10,)  # k capped at the train size


def test_linear_probe_separable_blobs_and_head_contract():
    train, train_labels = gaussian_blobs(1200, 4, 16, separation=3.0, seed=0)
    val, val_labels = gaussian_blobs(400, 4, 16, separation=3.0, seed=1)
    train = train * 20.0 + 5.0  # raw features far from standardised: the head must standardise itself
    val = val * 20.0 + 5.0
    top1, head = linear_probe(train, train_labels, val, val_labels, 4, epochs=10, learning_rate=1e-2, batch_size=64)
    assert top1 > 95.0
    assert head.inputs[0].name == "features" and head.output_names == ["probabilities"]
    assert any(isinstance(layer, keras.layers.Normalization) for layer in head.layers)

    # head(raw) == softmax(((raw - mean) / std) @ W + b), with the train split's mean and std.
    kernel, bias = head.get_layer("probabilities").get_weights()
    standardised = (val - train.astype(np.float64).mean(0)) / train.astype(np.float64).std(0)
    logits = standardised @ kernel + bias
    manual = np.exp(logits - logits.max(1, keepdims=True))
    manual /= manual.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(head(val[:50])), manual[:50], atol=1e-5)


def test_linear_probe_random_labels_is_near_chance_and_deterministic():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(800, 16)).astype(np.float32)
    val = rng.normal(size=(400, 16)).astype(np.float32)
    train_labels, val_labels = rng.integers(0, 4, 800), rng.integers(0, 4, 400)
    top1, head = linear_probe(train, train_labels, val, val_labels, 4, epochs=3, batch_size=64, seed=7)
    assert top1 < 40.0
    again, head_again = linear_probe(train, train_labels, val, val_labels, 4, epochs=3, batch_size=64, seed=7)
    assert again == top1
    for a, b in zip(head.get_weights(), head_again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_linear_head_saves_and_loads_in_safe_mode(tmp_path):
    head = build_linear_head(np.ones(8, np.float32), np.full(8, 4.0, np.float32), 3, weight_decay=1e-4)
    features = np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32)
    path = tmp_path / "linear_head.keras"
    head.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(features)), np.asarray(head(features)), atol=1e-6)


def tiny_encoder():
    images = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(images)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.5)(x)  # would randomise the features if called in training mode
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(images, features)


def test_extract_features_matches_inference_mode_call():
    keras.utils.set_random_seed(0)
    encoder = tiny_encoder()
    encoder.layers[2].moving_mean.assign(np.full(4, 0.3, np.float32))  # inference-mode BN differs visibly
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    features = extract_features(encoder, images, batch_size=4)  # 10 = 4 + 4 + 2: a ragged last batch
    assert features.dtype == np.float32 and features.shape == (10, 4)
    expected = np.asarray(encoder(images.astype(np.float32) / 255.0, training=False))
    np.testing.assert_allclose(features, expected, atol=1e-6)
    assert extract_features(encoder, images[:0]).shape == (0, 4)
    with pytest.raises(TypeError):
        extract_features(encoder, images.astype(np.float32))


def test_labelled_subset_is_stratified_deterministic_and_keeps_every_class():
    from sslzoo.evaluation import labelled_subset

    labels = np.repeat(np.arange(5), 40)
    subset = labelled_subset(labels, 0.1, seed=3)
    assert len(subset) == 20 and np.bincount(labels[subset]).tolist() == [4] * 5
    np.testing.assert_array_equal(subset, labelled_subset(labels, 0.1, seed=3))
    assert not np.array_equal(subset, labelled_subset(labels, 0.1, seed=4))
    assert set(labels[labelled_subset(labels, 0.001, seed=0)]) == set(range(5))
