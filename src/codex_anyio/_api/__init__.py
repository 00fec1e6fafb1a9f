"""The async user API: ``AsyncCodex``, ``Thread``, ``TurnHandle`` and what they take.

``_codex`` owns one runtime and its connection; ``_thread`` and ``_turn`` are a thread and a
turn owned by the scope that started it; ``_dispatch`` decides who answers a server request;
``_tools`` (dynamic tools), ``_inputs`` (turn input), ``_modes`` and ``_presets`` (the
official presets and lean thread options), ``_account`` and ``_credentials`` (login),
``_metadata`` (the handshake's answer).

Rules: it builds on ``_rpc`` and ``_wire``; it never imports the sync twin or a product.
Products use it as users do.
"""
