"""The WebSocket door (``/ws``): live events and streaming AI over one socket (see docs/websocket.md)."""
