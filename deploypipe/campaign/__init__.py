"""Characterization campaigns: models x targets x variants built, measured or estimated, and kept in
one results store (docs/campaign.md)."""
