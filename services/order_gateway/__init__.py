"""Order gateway: storefront-facing checkout API, idempotent order acceptance, channel adapters."""
