"""Remote zoo: index, verified download into the cache, cache hits, failures that cache nothing.

Everything is offline: the "server" is a tmp folder reached through file:// URLs (and, for redirects, a
local HTTP server on 127.0.0.1).
"""

import http.server
import importlib.util
import json
import os
import shutil
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import sslzoo
from sslzoo.zoo import loader as zoo
from sslzoo.zoo import remote as zoo_remote
from sslzoo.export import export_encoder, sha256_file
from sslzoo.zoo import ArtifactIntegrityError, ModelNotFoundError
from sslzoo.zoo.remote import DownloadError, IndexUnreachableError, ModelIndexError

SIZE = 16
NAME = "remote_model"
ROOT = Path(__file__).resolve().parents[1]


def _make_index_script():
    spec = importlib.util.spec_from_file_location("make_index", ROOT / "scripts" / "make_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_encoder(seed=0):
    keras.utils.set_random_seed(seed)
    images = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(images)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    return keras.Model(images, keras.layers.GlobalAveragePooling2D()(x))


def random_images(n, seed=1):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export (built once); returns (export folder, original encoder)."""
    encoder = tiny_encoder()
    folder = export_encoder(encoder, tmp_path_factory.mktemp("exports") / NAME, image_size=SIZE,
                            card={"method": "simclr", "metrics": {"knn_top1": 0.5}})
    return folder, encoder


@pytest.fixture
def env(exported, tmp_path, monkeypatch):
    """A file:// server holding the export + index.json, an empty cache, no local export of NAME."""
    folder, encoder = exported
    server = tmp_path / "server"
    shutil.copytree(folder, server / NAME)
    _make_index_script().main(["--exports", str(server), "--output", str(server / "index.json")])
    cache = tmp_path / "cache"
    monkeypatch.setenv("SSLZOO_HOME", str(cache))
    monkeypatch.setenv("SSLZOO_INDEX_URL", server.as_uri())
    monkeypatch.setenv("SSLZOO_EXPORTED", str(tmp_path / "no_local_exports"))
    monkeypatch.chdir(tmp_path)
    return {"server": server, "cache": cache, "encoder": encoder, "export": folder}


def cache_contents(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_make_index_lists_files_sizes_and_card_hash(env):
    index = json.loads((env["server"] / "index.json").read_text())
    assert index["format_version"] == 1
    entry = index["models"][NAME]
    card = json.loads((env["export"] / "model_card.json").read_text())
    assert set(entry["files"]) == set(card["files"]) | {"model_card.json"}
    assert entry["model_card"] == "model_card.json"
    assert entry["files"]["model_card.json"]["sha256"] == sha256_file(env["export"] / "model_card.json")
    keras_file = entry["files"]["encoder.keras"]
    assert keras_file == {"sha256": card["files"]["encoder.keras"],
                          "size": (env["export"] / "encoder.keras").stat().st_size}
    assert entry["method"] == "simclr" and entry["knn_top1"] == 0.5 and entry["image_size"] == SIZE


def test_download_verifies_caches_and_second_load_is_a_cache_hit(env, monkeypatch):
    images = random_images(3)
    expected = env["encoder"](images, training=False).numpy()
    model = sslzoo.load(NAME)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-6)
    assert cache_contents(env["cache"]) == [NAME]  # no temporaries left
    assert not list((env["cache"] / NAME).rglob(".*"))  # no .part files
    zoo.verify_files(env["cache"] / NAME)

    shutil.rmtree(env["server"])  # no server any more: must be a cache hit

    def no_network(url, timeout):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(zoo_remote, "_open", no_network)
    again = zoo.load(NAME)
    np.testing.assert_allclose(again.predict(images, verbose=0), expected, atol=1e-6)
    served = zoo.load(NAME, format="saved_model")
    np.testing.assert_allclose(served.signatures["serving_default"](images=images)["features"].numpy(),
                               expected, atol=1e-5)
    assert NAME in [m["name"] for m in zoo.list_models()]


def test_index_url_argument_without_env(env, monkeypatch):
    monkeypatch.delenv("SSLZOO_INDEX_URL")
    url = (env["server"] / "index.json").as_uri()  # the index file's own URL works too
    assert zoo.resolve(NAME, index_url=url) == env["cache"] / NAME


def test_flipped_byte_on_server_raises_and_caches_nothing(env):
    flip_byte(env["server"] / NAME / "encoder.keras")
    expected = json.loads((env["server"] / "index.json").read_text())["models"][NAME]["files"]
    with pytest.raises(ArtifactIntegrityError) as error:
        zoo.load(NAME)
    message = str(error.value)
    assert "encoder.keras" in message and expected["encoder.keras"]["sha256"] in message
    assert sha256_file(env["server"] / NAME / "encoder.keras") in message  # the hash we got
    assert cache_contents(env["cache"]) == []


def test_truncated_download_leaves_nothing(env):
    path = env["server"] / NAME / "encoder.tflite"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ArtifactIntegrityError, match="encoder.tflite"):
        zoo.load(NAME)
    assert cache_contents(env["cache"]) == []


def test_connection_dropped_mid_stream_leaves_nothing(env, monkeypatch):
    real_open = zoo_remote._open

    class Dropping:
        def __init__(self, response):
            self.response, self.calls = response, 0

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("connection reset by peer")
            return self.response.read(min(n, 100))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.response.close()

    def flaky_open(url, timeout):
        response = real_open(url, timeout)
        return Dropping(response) if url.endswith("encoder.keras") else response

    monkeypatch.setattr(zoo_remote, "_open", flaky_open)
    with pytest.raises(DownloadError, match="encoder.keras.*connection reset"):
        zoo.load(NAME)
    assert cache_contents(env["cache"]) == []


def test_tampered_cache_entry_raises_with_how_to_clear(env):
    zoo.resolve(NAME)  # download
    flip_byte(env["cache"] / NAME / "encoder.keras")
    with pytest.raises(ArtifactIntegrityError, match="(?s)encoder.keras.*Delete the folder") as error:
        zoo.load(NAME)
    assert str(env["cache"] / NAME) in str(error.value)


def test_unreachable_index_is_a_clear_error(env, monkeypatch):
    url = (env["server"].parent / "nowhere").as_uri()
    monkeypatch.setenv("SSLZOO_INDEX_URL", url)
    unreachable = "could not reach the model index at .*nowhere.*SSLZOO_INDEX_URL"
    with pytest.raises(IndexUnreachableError, match=unreachable):
        zoo.load(NAME)
    with pytest.raises(ValueError, match="unsupported URL"):
        zoo.load(NAME, index_url="http://example.com/zoo")  # cleartext index refused


def test_missing_name_lists_local_and_index_names(env, monkeypatch):
    local_root = env["server"].parent / "local_root"
    shutil.copytree(env["export"], local_root / "local_model")
    monkeypatch.setenv("SSLZOO_EXPORTED", str(local_root))
    with pytest.raises(ModelNotFoundError) as error:
        zoo.load("no_such_model")
    message = str(error.value)
    assert "no_such_model" in message and "local_model" in message and NAME in message
    assert env["server"].as_uri() in message
    assert cache_contents(env["cache"]) == []


def test_no_index_configured_means_no_network(env, monkeypatch):
    monkeypatch.delenv("SSLZOO_INDEX_URL")
    monkeypatch.setattr(zoo_remote, "_open", lambda url, timeout: pytest.fail(f"contacted {url}"))
    with pytest.raises(ModelNotFoundError, match="no remote index"):
        zoo.load(NAME)


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_index_as_a_local_path_maps_a_name_to_a_folder_elsewhere(env, monkeypatch, where):
    """SSLZOO_INDEX_URL may be a plain path; an entry's "url" points at its folder (relative to the index or
    absolute); only file:// URLs are opened, and the copy is verified into the cache as from a server."""
    elsewhere = env["server"].parent / "mirror" / "models" / "tiny"
    elsewhere.parent.mkdir(parents=True)
    shutil.move(str(env["server"] / NAME), str(elsewhere))
    index_path = env["server"] / "index.json"
    index = json.loads(index_path.read_text())
    index["models"][NAME]["url"] = "../mirror/models/tiny" if where == "relative" else str(elsewhere)
    index_path.write_text(json.dumps(index))
    monkeypatch.setenv("SSLZOO_INDEX_URL", str(index_path))
    opened = []
    real_open = zoo_remote._open
    monkeypatch.setattr(zoo_remote, "_open", lambda url, timeout: opened.append(url) or real_open(url, timeout))
    images = random_images(2)
    model = sslzoo.load(NAME)
    np.testing.assert_allclose(model.predict(images, verbose=0), env["encoder"](images).numpy(), atol=1e-6)
    assert opened and all(url.startswith("file://") for url in opened)
    assert any(url.startswith(elsewhere.as_uri() + "/") for url in opened)
    assert cache_contents(env["cache"]) == [NAME]


def test_a_served_index_cannot_point_at_local_files():
    assert zoo_remote.model_url("m", {}, "https://zoo.example/v1") == "https://zoo.example/v1/m"
    assert zoo_remote.model_url("m", {"url": "../v0/m"}, "https://zoo.example/v1") == "https://zoo.example/v0/m"
    for url in ("/etc/models/m", "file:///etc/models/m"):
        with pytest.raises(ModelIndexError, match="index is not local"):
            zoo_remote.model_url("m", {"url": url}, "https://zoo.example/v1")


@pytest.mark.parametrize("change", ["bad_name", "bad_path", "bad_hash"])
def test_unsafe_index_entries_are_refused(env, change):
    index_path = env["server"] / "index.json"
    index = json.loads(index_path.read_text())
    entry = index["models"][NAME]
    if change == "bad_name":
        index["models"]["..evil"] = index["models"].pop(NAME)
        name = "..evil"
    else:
        name = NAME
        spec = entry["files"].pop("encoder.keras")
        if change == "bad_path":
            entry["files"]["../escape.keras"] = spec
        else:
            entry["files"]["encoder.keras"] = dict(spec, sha256="zz")
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelIndexError):
        zoo.load(name)
    assert cache_contents(env["cache"]) == [] and not (env["server"].parent / "escape.keras").exists()


def _add_files(export, files):
    card = json.loads((export / "model_card.json").read_text())
    for relative in files:
        card["files"][relative] = sha256_file(export / relative)
    (export / "model_card.json").write_text(json.dumps(card))


def test_head_and_variants(env, tmp_path):
    export = tmp_path / "with_head"
    shutil.copytree(env["export"], export)
    with pytest.raises(FileNotFoundError, match="no classifier head"):
        zoo.load(export, head=True)
    features = keras.Input((4,))
    keras.Model(features, keras.layers.Dense(3, activation="softmax")(features)).save(export / "head.keras")
    (export / "labels.txt").write_text("cat\ndog\nbird\n")
    shutil.copy(export / "encoder.tflite", export / "encoder_int8.tflite")
    _add_files(export, ["head.keras", "labels.txt", "encoder_int8.tflite"])

    classifier = zoo.load(export, head=True)
    probabilities = classifier.predict(random_images(2), verbose=0)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert zoo.load_labels(export) == ["cat", "dog", "bird"]
    with pytest.raises(ValueError, match="format='keras'"):
        zoo.load(export, format="saved_model", head=True)

    assert zoo.tflite_variants(export) == ["float32", "int8"]
    lite = zoo.load(export, format="tflite", variant="int8")
    if importlib.util.find_spec("sslzoo.export.litert_model") is not None:
        from sslzoo.export.litert_model import TFLiteModel

        assert isinstance(lite, TFLiteModel)
        images = random_images(2)
        np.testing.assert_allclose(lite.predict(images), env["encoder"](images, training=False).numpy(),
                                   atol=1e-4)
    with pytest.raises(ValueError, match="variants present: float32, int8"):
        zoo.load(export, format="tflite", variant="float16")
    with pytest.raises(ValueError, match="tflite"):
        zoo.load(export, variant="int8")


def test_network_reads_have_a_timeout_and_a_timeout_is_a_clear_error(env, monkeypatch):
    seen = []

    def timing_out(url, timeout):
        seen.append(timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(zoo_remote, "_open", timing_out)
    with pytest.raises(IndexUnreachableError, match="could not reach the model index.*timed out"):
        zoo.load(NAME)
    assert seen == [zoo_remote.TIMEOUT_SECONDS] and zoo_remote.TIMEOUT_SECONDS == 60
    assert cache_contents(env["cache"]) == []


def test_list_models_remote_adds_index_entries(env):
    assert NAME not in [m["name"] for m in zoo.list_models()]  # local + cache only by default
    remote = {m["name"]: m for m in zoo.list_models(remote=True)}[NAME]
    assert remote["path"] is None and remote["method"] == "simclr" and remote["knn_top1"] == 0.5
    assert cache_contents(env["cache"]) == []  # listing downloads nothing


# ------------------------------------------------------------------ stale temporaries in the cache

DAY = 24 * 3600


def age(path, seconds):
    """Sets the mtime of `path` and everything under it `seconds` into the past."""
    stamp = time.time() - seconds
    for item in [path, *path.rglob("*")]:
        os.utime(item, (stamp, stamp))


def plant_temporaries(cache):
    """A killed download's leftovers (2 days old), a live download (old folder, fresh .part), a fresh
    temporary, and old entries that are not download temporaries."""
    cache.mkdir(parents=True, exist_ok=True)
    stale = cache / f".{NAME}.tmp-killed"
    (stale / "1").mkdir(parents=True)
    (stale / "1" / ".saved_model.pb.part").write_bytes(b"x" * 10)
    age(stale, 2 * DAY)
    live = cache / f".{NAME}.tmp-live"
    live.mkdir()
    (live / ".encoder.keras.part").write_bytes(b"x")
    age(live, 2 * DAY)
    os.utime(live / ".encoder.keras.part")  # still being written
    fresh = cache / ".other.tmp-fresh"
    fresh.mkdir()
    (cache / ".other.old-keep").mkdir()
    age(cache / ".other.old-keep", 2 * DAY)
    return {"stale": stale, "kept": [live, fresh, cache / ".other.old-keep"]}


def test_download_removes_stale_temporaries_only(env):
    planted = plant_temporaries(env["cache"])
    index = zoo_remote.fetch_index(env["server"].as_uri())
    zoo_remote.download_model(NAME, index["models"][NAME], env["server"].as_uri(), cache=env["cache"])
    assert not planted["stale"].exists()
    assert all(path.exists() for path in planted["kept"])
    assert (env["cache"] / NAME / "model_card.json").is_file()


def test_cache_lookup_removes_stale_temporaries_only(env, monkeypatch):
    zoo.resolve(NAME)  # download
    planted = plant_temporaries(env["cache"])
    monkeypatch.setattr(zoo_remote, "_open", lambda url, timeout: pytest.fail(f"contacted {url}"))
    assert zoo.resolve(NAME) == env["cache"] / NAME  # a cache hit, and the cache is tidied
    assert not planted["stale"].exists()
    assert all(path.exists() for path in planted["kept"])


# ------------------------------------------------------------------------------- redirects


@pytest.fixture
def redirecting_server(env):
    """http://127.0.0.1:<port>: serves the env's index.json, answers every other path with a 302 to
    `server.location` (or, with `server.redirect_index`, the index too)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/index.json" and not self.server.redirect_index:
                body = (env["server"] / "index.json").read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(302)
            self.send_header("Location", self.server.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    server.redirect_index = True
    server.location = None
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("what", ["index", "file"])
@pytest.mark.parametrize("scheme", ["http", "ftp"])
def test_redirect_off_https_is_refused(env, redirecting_server, what, scheme):
    server = redirecting_server
    server.redirect_index = what == "index"
    server.location = f"{scheme}://127.0.0.1:{server.server_address[1]}/elsewhere"
    with pytest.raises(DownloadError) as error:
        zoo.load(NAME, index_url=server.url)
    message = str(error.value)
    assert f"refusing the redirect from {server.url}/" in message
    assert f"to {server.location}: sslzoo follows redirects to https:// only" in message
    assert "try again" not in message and "\n" not in message
    assert cache_contents(env["cache"]) == []


def test_redirect_to_https_is_followed(env, redirecting_server):
    server = redirecting_server
    server.location = "https://127.0.0.1:1/index.json"  # followed, then nothing listens there
    with pytest.raises(IndexUnreachableError) as error:
        zoo.load(NAME, index_url=server.url)
    message = str(error.value)
    assert "Connection refused" in message and "redirect" not in message  # followed, not refused
    assert cache_contents(env["cache"]) == []
