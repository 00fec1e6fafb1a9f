from _bootstrap import runtime_config

from codex_anyio import Codex

with Codex(config=runtime_config()) as codex:
    print("server.name:", codex.metadata.serverInfo.name)
    print("server.version:", codex.metadata.serverInfo.version)
    print("platform:", codex.metadata.platformFamily, codex.metadata.platformOs)

    models = codex.models(include_hidden=True)
    print("models.count:", len(models.data))
    for model in models.data[:5]:
        print("model:", model.id, model.model, model.hidden)
