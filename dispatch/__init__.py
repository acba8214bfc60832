"""Webhook dispatch: signs events and POSTs them to tenant-supplied URLs without letting a URL reach inside."""
