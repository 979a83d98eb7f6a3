"""The configuration: YAML read and validated once, at the edge, into one frozen tree."""
