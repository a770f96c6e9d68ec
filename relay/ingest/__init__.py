"""Browser ingest: what a page saw in a room relay cannot join, posted to `/v1/ingest`,
decoded by the same decoders into the same pipeline (docs/ingest.md)."""

from relay.ingest.http import add_ingest_routes
from relay.ingest.service import IngestService
from relay.ingest.tokens import IngestGrant, mint_ingest_token, verify_ingest_token

__all__ = [
    "IngestGrant",
    "IngestService",
    "add_ingest_routes",
    "mint_ingest_token",
    "verify_ingest_token",
]
