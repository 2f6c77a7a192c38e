"""The network side of ``musebot serve``: HTTP/WebSocket API, OSC control and the browser page."""
