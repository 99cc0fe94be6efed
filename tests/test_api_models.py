"""`/v1/models`: base models from the alias table, fine-tuned models and checkpoints, retrieve, delete rules."""

import httpx
import openai
import pytest

from serve_server import register_fine_tune

from tunery.models.aliases import list_base_models


def test_list_has_every_alias_and_the_packaged_model(openai_client, api_server, spec):
    body = httpx.get(f"{api_server.base_url}/models", headers=api_server.headers()).json()
    spec.validate("ListModelsResponse", body)
    ids = [m["id"] for m in body["data"]]
    assert ids[: len(list_base_models())] == list_base_models()
    assert {"SmolLM2-135M-Instruct", "gpt-4o-mini-2024-07-18", "gpt-3.5-turbo", "babbage-002", "davinci-002", "curie"} <= set(ids)
    assert [m.id for m in openai_client.models.list()] == ids


def test_retrieve(openai_client, spec):
    m = openai_client.models.retrieve("gpt-3.5-turbo")
    spec.validate("Model", m.model_dump())
    assert (m.id, m.object, m.owned_by) == ("gpt-3.5-turbo", "model", "tunery")
    with pytest.raises(openai.NotFoundError) as err:
        openai_client.models.retrieve("no-such-model")
    assert err.value.response.json()["error"] == {
        "message": "The model 'no-such-model' does not exist", "type": "invalid_request_error", "param": "model", "code": "model_not_found"
    }
    for name in ("/tmp", "org/name", "x.gguf"):
        with pytest.raises(openai.NotFoundError):
            openai_client.models.retrieve(name)


def test_unlisted_openai_names_exist_by_rule(openai_client):
    """`gpt-4.1-mini` is not in the list, yet chat and jobs accept it: retrieving it agrees."""
    assert "gpt-4.1-mini" not in [m.id for m in openai_client.models.list()]
    m = openai_client.models.retrieve("gpt-4.1-mini")
    assert (m.id, m.owned_by) == ("gpt-4.1-mini", "tunery")
    with pytest.raises(openai.PermissionDeniedError):
        openai_client.models.delete("o4-mini")


def not_found(name: str) -> dict:
    return {"message": f"The model '{name}' does not exist", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


def test_fine_tuned_names_with_colons_route_to_the_model(api_server, openai_client, tmp_path, spec):
    """A fine-tuned model and its checkpoint (colons, an empty field) are found, read and deleted
    through /v1/models/{name}; a miss is the route's model_not_found, not a routing 404."""
    key = api_server.new_key("colons")
    name, ckpt = "ft:gpt-4o-mini:colons::ftjob-colons1", "ft:gpt-4o-mini:colons::ftjob-colons1:ckpt-step-2"
    weights, ckpt_weights = tmp_path / "adapter", tmp_path / "checkpoints" / "step-2"
    for folder in (weights, ckpt_weights):
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
    register_fine_tune(api_server.home, key, name, weights, (ckpt, ckpt_weights, 2))
    client = openai.OpenAI(base_url=api_server.base_url, api_key=key, max_retries=0)

    for model in (name, ckpt):
        m = client.models.retrieve(model)
        spec.validate("Model", m.model_dump())
        assert (m.id, m.object) == (model, "model") and m.owned_by != "tunery"
    assert [m.id for m in client.models.list()][-2:] == [name, ckpt]
    for missing in (name + "x", "ft:gpt-4o-mini:org::abc"):
        with pytest.raises(openai.NotFoundError) as err:
            client.models.retrieve(missing)
        assert err.value.response.json()["error"] == not_found(missing)
    with pytest.raises(openai.NotFoundError) as err:  # another project's model
        openai_client.models.retrieve(name)
    assert err.value.response.json()["error"] == not_found(name)

    assert client.models.delete(ckpt).model_dump() == {"id": ckpt, "object": "model", "deleted": True}
    assert not ckpt_weights.exists() and weights.exists()
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve(ckpt)
    assert err.value.response.json()["error"] == not_found(ckpt)
    assert client.models.retrieve(name).id == name


def test_delete_base_is_forbidden_unknown_is_not_found(openai_client, spec):
    with pytest.raises(openai.PermissionDeniedError) as err:
        openai_client.models.delete("curie")
    spec.validate("ErrorResponse", err.value.response.json())
    assert err.value.response.json()["error"]["message"] == "The model 'curie' is a base model: only fine-tuned models can be deleted."
    with pytest.raises(openai.NotFoundError):
        openai_client.models.delete("ft:gpt-4o-mini:org::nope")


def test_legacy_client_lists_models(legacy):
    out = legacy.run("print(sorted(m.id for m in openai.Model.list().data)[:3]); print(openai.Model.retrieve('davinci').id)")
    assert out.splitlines()[-1] == "davinci"
