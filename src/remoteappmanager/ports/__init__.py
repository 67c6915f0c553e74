"""Ports: the interfaces (typing.Protocol) services depend on; adapters implement them."""
