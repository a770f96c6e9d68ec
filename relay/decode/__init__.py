"""Decoders: raw items from the LiveKit handlers to contract events (pure, never raise)."""
