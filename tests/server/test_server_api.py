"""The web API with a stand-in workbench: validation (422), ids and files, HEAD, the Host
allow-list, limits and JSON errors, the page, OpenAPI, the label."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from server_fakes import BASE, TINY_MP4, jobs_dir

from lipbench import server
from lipbench.errors import InputError, LipbenchError, TTSError
from lipbench.jobs import UNTRAINED_LABEL
from lipbench.render import stamp_label
from lipbench.server.schemas import ErrorBody
from lipbench.tts import EngineUnavailableError

# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field", "needle"),
    [
        ("/api/generate", {"text": "hi", "lang": "xx"}, "lang", "'xx' is not supported"),
        ("/api/generate", {"text": "hi", "lang": "ru", "engine": "piper"}, "lang", "by the piper"),
        ("/api/generate", {"text": "a" * 41, "lang": "en"}, "text", "limit of 40"),
        ("/api/generate", {"text": "   ", "lang": "en"}, "text", "empty"),
        ("/api/generate", {"text": "hi\x00there"}, "text", "control character"),
        ("/api/generate", {"text": "a\x1b[31m"}, "text", "U+001B"),
        ("/api/generate", {"text": "?!… ..."}, "text", "no letter, digit or symbol"),
        ("/api/generate", {"lang": "en"}, "body", "either text or audio_id"),
        ("/api/generate", {"text": "hi", "audio_id": "a" * 32}, "body", "not both"),
        ("/api/generate", {"audio_id": "../../etc/passwd"}, "audio_id", "32-hex-digit"),
        ("/api/generate", {"text": "hi", "engine": "festival"}, "engine", "piper"),
        ("/api/generate", {"text": "hi", "chunks": 2}, "chunks", "not permitted"),
        ("/api/generate_parallel", {"text": "hi", "chunks": 99}, "chunks", "less than or equal"),
        ("/api/generate_parallel", {"text": "hi", "chunks": 0}, "chunks", "greater than"),
    ],
)
def test_validation_errors_are_clear_422(fake_client, fake_wb, path, body, field, needle):
    r = fake_client.post(path, json=body)
    assert r.status_code == 422
    data = r.json()
    assert needle in data["detail"] and data["fix"]
    assert any(e["field"] == field and needle in e["message"] for e in data["errors"])
    assert not fake_wb.calls  # nothing was queued


@pytest.mark.parametrize(
    ("body", "fix"),
    [
        ({"text": "hi", "lang": "ru", "engine": "piper"}, "espeak"),
        ({"text": "a\x00b"}, "remove it"),
        ({"text": "?!"}, "pronounceable words"),
        ({"text": "hi", "chunks": 2}, '{"text": "Hello!", "lang": "en"}'),  # pydantic's own
    ],
)
def test_validation_errors_carry_their_own_fix(fake_client, body, fix):
    r = fake_client.post("/api/generate", json=body)
    assert r.status_code == 422 and fix in r.json()["fix"]
    assert fix not in r.json()["detail"]


def test_invalid_json_is_422(fake_client):
    r = fake_client.post(
        "/api/generate", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"] == "body: the body is not valid JSON"


def test_fake_generate_ok_and_default_lang(fake_client, fake_wb):
    t_before = time.time()
    r = fake_client.post("/api/generate", json={"text": "Hello"})
    assert r.status_code == 200, r.text
    assert fake_wb.calls[0]["lang"] == "en" and fake_wb.calls[0]["strategy"] == "sequential"
    assert fake_wb.calls[0]["chunks"] is None and "cancel" not in fake_wb.calls[0]
    # latency counts from this request (not from the server's start)
    origin_ts, origin = fake_wb.calls[0]["origin"]
    assert origin == "request" and t_before <= origin_ts <= time.time()
    assert "stream" not in fake_wb.calls[0]
    res = r.json()
    assert res["latency_origin"] == "request" and res["stream"] is None
    assert res["timings"]["first_playable_s"] == 1.4 and res["timings"]["stall_s"] == 0.0
    assert "latency_origin" not in res["timings"]  # numbers only there
    r = fake_client.post(
        "/api/generate_parallel", json={"text": "Привет", "lang": "ru", "chunks": 2}
    )
    assert r.status_code == 200
    assert fake_wb.calls[1]["strategy"] == "parallel" and fake_wb.calls[1]["chunks"] == 2
    assert fake_client.get(r.json()["video_url"]).content == TINY_MP4
    res = r.json()
    assert res["render_s"] == pytest.approx(1.4 - 0.1 - 0.1)
    assert res["audio_sha256"] == hashlib.sha256("Привет".encode()).hexdigest()


def test_audio_id_renders_the_earlier_jobs_wav(fake_client, fake_wb, fake_cfg):
    first = fake_client.post("/api/generate_parallel", json={"text": "Hello", "chunks": 2}).json()
    again = fake_client.post("/api/generate", json={"audio_id": first["audio_id"]})
    assert again.status_code == 200, again.text
    call = fake_wb.calls[1]
    assert call["text"] is None and "lang" not in call and "engine" not in call
    assert Path(call["audio"]) == jobs_dir(fake_cfg) / first["id"] / "result.files" / "audio.wav"
    res = again.json()
    assert res["audio_sha256"] == first["audio_sha256"] and res["audio_from"] == first["id"]
    assert res["timings"]["tts"] == 0.0 and res["tts"] is None
    gone = fake_client.post("/api/generate", json={"audio_id": "0" * 32})
    assert gone.status_code == 422
    assert gone.json()["errors"][0]["field"] == "audio_id" and "send text" in gone.json()["fix"]


# --- ids, files, HEAD ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/videos/0123456789abcdef0123456789abcdef.mp4",  # well-formed but unknown
        "/videos/0123456789ABCDEF0123456789ABCDEF.mp4",  # ids are lower-case hex only
        "/videos/..%2F..%2Fetc%2Fpasswd.mp4",
        "/videos/%2e%2e.mp4",
        "/videos/....mp4",
        "/videos/..%5C..%5Cetc%5Cpasswd.mp4",
        "/videos/%2Fetc%2Fpasswd.mp4",
        "/videos/result.mp4",
    ],
)
def test_unknown_or_traversal_ids_are_404(fake_client, url):
    r = fake_client.get(url)
    assert r.status_code == 404
    assert "detail" in r.json()


def test_traversal_to_a_real_file_is_404(fake_client):
    """Even when the target exists inside the server's own folder."""
    made = fake_client.post("/api/generate", json={"text": "Hello"}).json()
    rel = f"{made['id']}/result.mp4".replace("/", "%2F")
    assert fake_client.get(f"/videos/{rel}").status_code == 404
    assert fake_client.get(f"/videos/{made['id']}%2Fresult.mp4").status_code == 404
    assert fake_client.get(made["video_url"]).status_code == 200


def test_folder_not_made_by_this_server_is_not_served(fake_client, fake_cfg):
    stray_id = "ab" * 16
    stray = jobs_dir(fake_cfg) / stray_id
    stray.mkdir(parents=True)
    (stray / "result.mp4").write_bytes(TINY_MP4)
    assert fake_client.get(f"/videos/{stray_id}.mp4").status_code == 404


def test_head_on_a_video(fake_client):
    made = fake_client.post("/api/generate", json={"text": "Hello"}).json()
    r = fake_client.head(made["video_url"])
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == "video/mp4"
    assert int(r.headers["content-length"]) == len(TINY_MP4)
    assert r.headers["accept-ranges"] == "bytes"
    assert fake_client.head("/videos/" + "0" * 32 + ".mp4").status_code == 404


# --- Host allow-list ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["rebind.attacker.test", "127.0.0.1.attacker.test",
                                  "localhost:abc", "[::1", "evil:80:80", ""])  # fmt: skip
@pytest.mark.parametrize(
    "path", ["/api/health", "/parallel_test", "/static/app.js", "/videos/x.mp4"]
)
def test_foreign_host_is_400(fake_client, host, path):
    r = fake_client.get(path, headers={"host": host})
    assert r.status_code == 400
    assert "is not allowed" in r.json()["detail"] and "allowed_hosts" in r.json()["fix"]


def test_foreign_host_cannot_start_a_job(fake_client, fake_wb):
    r = fake_client.post("/api/generate", json={"text": "Hi"}, headers={"host": "evil.test"})
    assert r.status_code == 400 and not fake_wb.calls


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:3000", "localhost", "LOCALHOST:8080",
                                  "[::1]", "[::1]:3000"])  # fmt: skip
def test_loopback_names_any_port_are_allowed(fake_client, host):
    assert fake_client.get("/api/health", headers={"host": host}).status_code == 200


def test_allowed_hosts_configurable(tmp_path, make_config, fake_wb):
    cfg = make_config(tmp_path, server={"allowed_hosts": ["lipbench.example", "::1"]})
    app = server.create_app(cfg, workbench=fake_wb, warmup=False)
    with TestClient(app, base_url="http://lipbench.example") as client:
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/health", headers={"host": "[::1]:9"}).status_code == 200
        assert client.get("/api/health", headers={"host": "localhost"}).status_code == 400
    cfg = make_config(tmp_path, server={"allowed_hosts": ["*"]})
    app = server.create_app(cfg, workbench=fake_wb, warmup=False)
    with TestClient(app, base_url="http://anything.test") as client:
        assert client.get("/api/health").status_code == 200


# --- limits and errors --------------------------------------------------------------------


def test_body_over_limit_is_413_by_content_length(fake_client, fake_wb):
    r = fake_client.post(
        "/api/generate",
        content=json.dumps({"text": "x" * 5000}).encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    assert "2048 bytes" in r.json()["detail"]
    assert not fake_wb.calls


def test_body_over_limit_is_413_when_chunked(fake_cfg, fake_wb):
    """No Content-Length: the bytes that actually arrive are counted."""

    async def go() -> httpx.Response:
        app = server.create_app(fake_cfg, workbench=fake_wb, warmup=False)
        transport = httpx.ASGITransport(app=app)

        async def body() -> Any:
            for _ in range(10):
                yield b"x" * 500

        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.post(
                "/api/generate", content=body(), headers={"content-type": "application/json"}
            )

    r = asyncio.run(go())
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413
    assert not fake_wb.calls


@pytest.mark.parametrize(
    ("error", "status", "needle"),
    [
        (RuntimeError("secret internals"), 500, "internal server error (RuntimeError)"),
        (TTSError("espeak failed", "try another engine"), 500, "espeak failed"),
        (InputError("no face found", "use another image"), 422, "no face found"),
        # what the TTS package raises for text it cannot speak and for gTTS offline
        (InputError("piper produced no audio", "give words"), 422, "no audio"),
        (EngineUnavailableError("gTTS: no network", "use espeak"), 422, "no network"),
    ],
)
def test_job_errors_are_json_without_traceback(
    fake_client, fake_wb, fake_cfg, error, status, needle
):
    fake_wb.error = error
    r = fake_client.post("/api/generate", json={"text": "Hello"})
    assert r.status_code == status
    assert needle in r.json()["detail"]
    assert "Traceback" not in r.text and "secret internals" not in r.text
    if isinstance(error, LipbenchError):
        assert r.json()["fix"] == error.fix
    # a failed job leaves no folder and no servable id behind
    assert not any(jobs_dir(fake_cfg).iterdir())
    assert fake_client.get("/api/health").json()["queue"]["running"] == 0


def test_unknown_route_and_method_are_json(fake_client):
    r = fake_client.get("/nope")
    assert r.status_code == 404 and r.json()["detail"] == "Not Found" and "/docs" in r.json()["fix"]
    r = fake_client.get("/api/generate")
    assert r.status_code == 405 and "detail" in r.json()


VENDORED_URLS = {
    b"http://www.w3.org/ns/ttml#styling",
    b"https://aomedia.org/emsg/ID3",
    b"https://github.com/babel/babel/blob/main/packages/babel-helpers/LICENSE",
}

# --- page and docs --------------------------------------------------------------------------


def test_page_and_its_assets_are_local(fake_client):
    page = fake_client.get("/parallel_test")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    for needle in ('id="compare"', 'id="panel-parallel"', 'id="panel-sequential"', "<video",
                   'id="pairs"', 'id="speedup-noise"', 'id="speedup-tts"', 'id="stream"',
                   'data-stream-endpoint="/api/stream/generate_parallel"'):  # fmt: skip
        assert needle in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"/static/app.js", "/static/stream.js", "/static/style.css",
            "/static/vendor/hls.min.js"} <= set(assets)  # fmt: skip
    for url in assets:
        assert not url.startswith(("http:", "https:", "//")), f"external asset {url}"
        if url.startswith("/static/"):
            r = fake_client.get(url)
            assert r.status_code == 200 and r.content
            urls = set(re.findall(rb"https?://[^\s\"')]*", r.content))
            # hls.js names these but never loads them: an XML namespace, an emsg scheme id
            # (compared with the stream's), and its bundler's licence URL in a comment
            allowed = VENDORED_URLS if url.startswith("/static/vendor/") else set()
            assert urls <= allowed, f"{url} references the network: {urls - allowed}"
    assert fake_client.get("/", follow_redirects=False).headers["location"] == "/parallel_test"


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _error_schema(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    resp = spec["paths"][path][method]["responses"][str(status)]
    return _resolve(spec, resp["content"]["application/json"]["schema"])


def test_openapi_documents_the_real_error_body(fake_client, fake_wb):
    spec = fake_client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(spec)  # FastAPI's list-style 422 is not ours
    video_op = spec["paths"]["/videos/{video_id}.mp4"]["get"]
    assert "422" not in video_op["responses"] and "404" in video_op["responses"]
    assert "head" in spec["paths"]["/videos/{video_id}.mp4"]
    assert video_op["parameters"][0]["name"] == "video_id"
    fake_wb.error = InputError("x", "y")
    real = {  # (path, method, status) documented → a real body with that status
        ("/api/generate", "post", 422): fake_client.post("/api/generate", json={"text": "\x00"}),
        ("/api/generate_parallel", "post", 413): fake_client.post(
            "/api/generate_parallel", content=b"{" + b" " * 3000 + b"}",
            headers={"content-type": "application/json"}),
        ("/api/generate", "post", 400): fake_client.get("/api/health", headers={"host": "e.test"}),
        ("/videos/{video_id}.mp4", "get", 404): fake_client.get("/videos/" + "0" * 32 + ".mp4"),
    }  # fmt: skip
    real[("/api/generate_parallel", "post", 422)] = fake_client.post(
        "/api/generate_parallel", json={"text": "Hi"}
    )  # an InputError from the job
    for (path, method, status), resp in real.items():
        assert resp.status_code == status, (path, resp.text)
        schema = _error_schema(spec, path, method, status)
        body = resp.json()
        assert set(schema["required"]) <= set(body) <= set(schema["properties"]), (status, body)
        for key, value in body.items():
            prop = schema["properties"][key]
            kinds = {t.get("type") for t in prop.get("anyOf", [prop])}
            assert {"string": str, "array": list, "integer": int}[
                next(k for k in kinds if k != "null")
            ] is type(value)
        ErrorBody.model_validate(body)  # extra keys forbidden


def test_openapi_and_docs(fake_client):
    spec = fake_client.get("/openapi.json").json()
    assert {"/api/generate", "/api/generate_parallel", "/videos/{video_id}.mp4"} <= set(
        spec["paths"]
    )
    body = spec["paths"]["/api/generate"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("GenerateRequest")
    assert "429" in spec["paths"]["/api/generate"]["post"]["responses"]
    docs = fake_client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    if server.swagger_assets() is not None:  # offline Swagger UI when the bundle is installed
        assert "/docs-assets/swagger-ui-bundle.js" in docs.text
        assert fake_client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_untrained_label_sits_top_left():
    """Clear of a browser player's controls, which cover the bottom of the picture."""
    frame = np.full((256, 256, 3), 200, np.uint8)
    stamp_label(frame, UNTRAINED_LABEL)
    ys, xs = np.nonzero(frame.sum(axis=2) == 0)  # the label's black box
    assert ys.size and ys.max() < 256 * 0.15 and xs.min() < 10
    assert (frame[128:] == 200).all()  # nothing in the bottom half
