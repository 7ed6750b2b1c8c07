"""Agent backends behind one interface (``base.Agent``), built from settings by ``registry``.

One module per backend, so adding a CLI touches its own module and one registry line:
``command`` (any CLI), ``cli`` (what the real CLIs share) with ``opencode``, ``claude``,
``codex`` and ``aider``, ``opencode_server`` (one served OpenCode for many sessions) and
``scripted`` (the demo agent); ``process`` runs and ends their process trees.
"""
