"""WhatsApp webhooks: what both doors (the API port and the dedicated listener) do."""
