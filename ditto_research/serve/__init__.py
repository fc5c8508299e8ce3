"""The live server: ``python -m ditto_research.serve`` (browser page, WebSocket API, WebRTC), and its client
``python -m ditto_research.serve.client``. Every session is a client of one shared engine."""
