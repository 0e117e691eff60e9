"""The app and the API on ``--endpoint``: their chat phrases through the model server.

A real `secfm serve` server (``secfm.serving_api``'s FastAPI app over uvicorn, on loopback) serves
a tiny random Gemma-3 under a name that is not the registry's default, as `secfm serve --model
secfm-270m` serves ``secfm-270m``. Before the fix the endpoint's engine asked for the registry's
default model (``gemma-3-270m``), the server answered 404 and every chat turn fell back to the
tools' facts without a word from the model (issue #17: the server used 0.04 CPU-s in a 20-session
run). No real-model load.
"""

from __future__ import annotations

import threading
import time

import pytest

from secfm.serving import free_port


@pytest.fixture(scope="module")
def tiny_endpoint(tiny_model):
    import uvicorn

    from secfm.engines import get_engine
    from secfm.serving_api import create_server

    engine = get_engine("transformers", model=str(tiny_model))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_server(engine, tiny_model.name), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the tiny model server did not start"
    yield f"http://127.0.0.1:{port}/v1", tiny_model.name
    server.should_exit = True
    thread.join(10)


def test_app_chat_on_an_endpoint_phrases_with_the_served_model(tiny_endpoint):
    from secfm.app.api import ApiSettings
    from secfm.app.backend import Backend
    from secfm.workflows.chat import ChatPipeline

    url, served = tiny_endpoint
    backend = Backend.from_options(endpoint=url)  # what `secfm app --endpoint URL` builds
    engine = backend.chat_pipeline().engine
    assert engine.describe()["model"] == served and backend.describe()["model"] == served
    assert ApiSettings(endpoint=url).chat_engine().describe()["model"] == served  # `secfm api --endpoint URL`
    # the pipeline the backend built, without the retrieval store and the heads (not what is tested)
    chat = ChatPipeline(engine, store=False, cve_store=None, use_heads=False, max_new_tokens=3)
    answer = chat.answer("What is T1059.001?")
    assert answer.facts, "the tools found no facts: the model would not be asked"
    # the served model wrote (a random model's words: the chat's checks may then drop them)
    assert answer.model.raw and answer.timings.first_model_piece_s is not None, answer.model.detail
    assert answer.model.model == served
