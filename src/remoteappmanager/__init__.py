"""SimPhoNy-Remote: desktop and web applications in Docker containers, one shared service."""

__version__ = "3.0.0.dev0"
