"""The SQL database adapter: models, engines, repositories, unit of work and migrations."""
