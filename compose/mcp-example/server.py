"""Example MCP server (Python MCP SDK 2.x, streamable HTTP) for the compose stack.

The end-to-end tests in tests/ start this same file behind omni2. Tools:
- add(a, b): a + b
- echo(text): text
- counter(): increments a process-wide counter on every real call, so a cached answer
  (the same number twice) proves omni2 served the second call from its cache.
"""

import argparse

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

server = MCPServer("omni2-example")
_calls = {"counter": 0}


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def counter() -> int:
    """Count the calls that reached this server."""
    _calls["counter"] += 1
    return _calls["counter"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=["127.0.0.1:*", "localhost:*", "mcp-example:*"],
        help="Host header values accepted (DNS-rebinding protection stays on)",
    )
    args = parser.parse_args()
    server.run(
        "streamable-http",
        host=args.host,
        port=args.port,
        transport_security=TransportSecuritySettings(allowed_hosts=args.allowed_host),
    )


if __name__ == "__main__":
    main()
